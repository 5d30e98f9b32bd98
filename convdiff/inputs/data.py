"""Images to run models on: the embedded sample set, any image folder, labels, decoding.

Why this module is numpy + PIL only: it runs in the orchestrator, which never imports a
framework. Every image is decoded here once and the very same pixels go to both sides of a
comparison, so a difference in results can never come from two decoders.

Labels are ImageNet class indices (0..999, torchvision's order). A record's ``accepted`` holds
every class counted as a hit for top-1 accuracy -- the primary ``label`` first, then classes
that fit the image just as well (a tabby is also a "tiger cat"). Empty means unlabelled.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image, ImageOps

from convdiff.core.errors import DataError
from convdiff.inputs import imagenet
from convdiff.inputs.imagenet import WNID, wnid_class
from convdiff.inputs.sampling import sample_indices
from convdiff.inputs.scan import check_files

NUM_CLASSES = 1000
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # convdiff/data: package data
_LABELS_FORM = "expected '<image file> <class index 0..999 or class name>'"


@dataclass(frozen=True)
class ImageRecord:
    """One image: a stable name for reports, where it is, and what it shows (if known)."""

    name: str  # stable across runs: a folder-relative path, or the sample's file name
    path: str  # absolute path of the file
    label: int | None = None  # primary ImageNet class, None = unlabelled
    accepted: tuple[int, ...] = ()  # classes counted as a top-1 hit, label first

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "label": self.label,
            "accepted": list(self.accepted),
        }


@dataclass(frozen=True)
class SkippedFile:
    """A file of an image folder that was left out, and why."""

    name: str  # folder-relative path
    reason: str  # "not an image" or "unreadable image: <decoder message>"


class ImageList(list[ImageRecord]):
    """The records of an image folder, plus the files that were skipped.

    A plain list to every caller that only wants images; the run also reports ``skipped``
    (a count) so that a folder where half the files did not decode is not mistaken for a
    smaller data set, and how the images were chosen (:meth:`summary`).
    """

    def __init__(
        self,
        records: list[ImageRecord],
        skipped_files: tuple[SkippedFile, ...] = (),
        *,
        source: str = "",
        sample: int | None = None,
        seed: int = 0,
        notes: tuple[str, ...] = (),
    ):
        super().__init__(records)
        self.skipped_files = skipped_files
        self.source = source  # the folder, or "embedded sample set"
        self.sample, self.seed = sample, seed  # --sample N --seed S, when used
        self.notes = notes  # e.g. a --sample that took every image

    def summary(self) -> dict[str, object]:
        """The run report's ``data``: where the images came from and how many; ``sample`` and
        ``seed`` when they were sampled."""
        out: dict[str, object] = {
            "source": self.source,
            "images": len(self),
            "skipped": self.skipped,
            "labelled": sum(1 for r in self if r.accepted),
        }
        if self.sample is not None:
            out |= {"sample": self.sample, "seed": self.seed}
        return out

    @property
    def records(self) -> list[ImageRecord]:
        return list(self)

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    @property
    def not_images(self) -> int:
        return sum(s.reason == "not an image" for s in self.skipped_files)

    @property
    def unreadable(self) -> int:
        return self.skipped - self.not_images

    def describe_skipped(self) -> str:
        """One line for the terminal, e.g. ``skipped 3 files (2 not images, 1 unreadable) ...``."""
        if not self.skipped_files:
            return "skipped no files"
        # an image that failed says more than a stray text file
        first = next((s for s in self.skipped_files if s.reason != "not an image"), None)
        first = first or self.skipped_files[0]
        return (
            f"skipped {self.skipped} files ({self.not_images} not images, "
            f"{self.unreadable} unreadable), e.g. {first.name}: {first.reason}"
        )


# --- class names ---------------------------------------------------------------------------


@functools.cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order (torchvision's names, shipped as JSON)."""
    names = json.loads((_DATA_DIR / "imagenet_classes.json").read_text(encoding="utf-8"))
    return tuple(names)


def class_name(index: int) -> str:
    """The name of ImageNet class ``index`` (0..999), e.g. ``class_name(281) == "tabby"``."""
    if not 0 <= index < NUM_CLASSES:
        raise DataError(f"class index {index} is out of range", "class indices run from 0 to 999")
    return class_names()[index]


@functools.cache
def _index_by_name() -> dict[str, int]:
    names = class_names()
    exact = {n: i for i, n in enumerate(names)}
    folded = {n.casefold(): i for i, n in enumerate(names)}
    return {**folded, **exact}


def class_index(name: str) -> int | None:
    """The index of a class name (exact, else case-insensitive), or None when it names none."""
    table = _index_by_name()
    return table.get(name, table.get(name.casefold()))


# --- the embedded sample set ---------------------------------------------------------------


@functools.cache
def _sample_manifest() -> dict:
    return json.loads((_DATA_DIR / "sample_set.json").read_text(encoding="utf-8"))


def _package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it (no import-time cost)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the embedded sample set needs the '{package}' package, which is not installed",
            "install convdiff's dependencies (pip install -e .) or pass --data IMAGE_FOLDER",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def sample_set() -> list[ImageRecord]:
    """The default images: real photographs shipped inside installed packages (no download).

    See datasets/README.md for the images, their labels and why those labels.
    """
    records = []
    for entry in _sample_manifest()["images"]:
        path = _package_dir(entry["package"]) / entry["path"]
        if not path.is_file():
            raise DataError(
                f"sample image {entry['package']}/{entry['path']} is missing from the install",
                "reinstall scikit-image==0.26.0 or pass --data with an image folder",
            )
        label = entry.get("label")
        accepted = tuple(entry.get("accepted", [] if label is None else [label]))
        records.append(ImageRecord(entry["name"], str(path), label, accepted))
    return records


# --- image folders -------------------------------------------------------------------------


def load_images(
    data: Path | None = None,
    labels: Path | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> ImageList:
    """The images a command runs on (its ``--data --labels --limit --sample --seed``): the
    embedded sample set when ``data`` is None, else :func:`image_folder`; then a stratified
    random ``sample`` of them (:mod:`convdiff.inputs.sampling`), then the first ``limit``."""
    if data is not None:
        return image_folder(data, labels, limit=limit, sample=sample, seed=seed)
    records, notes = sample_set(), ()
    if sample is not None:
        records, notes = _sampled(records, [r.label for r in records], sample, seed, "set")
    return ImageList(
        records[:limit] if limit is not None else records,
        source="embedded sample set",
        sample=sample,
        seed=seed,
        notes=notes,
    )


def image_folder(
    folder: Path,
    labels: Path | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> ImageList:
    """Every image under ``folder`` (recursive, sorted), named by its folder-relative path.

    Labels come from ``labels`` when given (its form is detected: ``<file> <class>`` lines as
    in Caffe's ILSVRC2012 ``val.txt``; ILSVRC's ``LOC_val_solution.csv``; the devkit's
    ``ILSVRC2012_validation_ground_truth.txt`` with its ``meta.mat``; or the 1000 WordNet ids
    in class order, ``LOC_synset_mapping.txt``, for WordNet-id subfolders), else from class
    subfolders named by class index (``281/``), exact class name (``tabby/``) or ImageNet
    WordNet id (``n02123045/``, any subset of the 1000).

    ``sample``: a stratified random subset of that many image files (seeded by ``seed``,
    back in folder order) chosen *before* the readability check, so a 50,000-image folder
    sampled to 500 test-decodes about 500 files; an unreadable pick is skipped and counted,
    not replaced. ``limit``: the first that many readable images (of the sample, if any).
    Files that are not images or do not decode are skipped and counted, not fatal (with
    ``limit``, only those met before the scan stopped).
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(
            f"image folder {folder} does not exist",
            "pass an existing folder with --data, or leave --data out to use the sample set",
        )
    if not folder.is_dir():
        raise DataError(
            f"{folder} is a file, not a folder", "pass the folder that holds the images with --data"
        )
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and not _hidden(p.relative_to(folder))),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    labels_path = Path(labels).resolve() if labels is not None else None
    files = [p for p in files if p.resolve() != labels_path]
    if not files:
        raise DataError(
            f"image folder {folder} is empty",
            "put .jpg or .png images in it (subfolders are searched too)",
        )
    parsed = _read_labels(Path(labels)) if labels is not None else None  # fail before the scan
    entries = [(p.relative_to(folder).as_posix(), p) for p in files]
    names = [name for name, p in entries if _is_image(p)]
    if not names:
        _no_readable_image(folder, [SkippedFile(name, "not an image") for name, _ in entries])
    # labels are found for every image file, not only the ones a limited or sampled scan
    # reaches: a bad class folder is an error however few images are used
    if parsed is None:
        found = _labels_from_subfolders(names, None)
    elif parsed.wnids:
        found = _labels_from_subfolders(names, parsed.wnids)
    else:
        found = _match_labels(Path(labels), parsed.entries, names, folder)
    notes: tuple[str, ...] = ()
    if sample is not None:
        groups = [found[n][0] if n in found else None for n in names]
        picked, notes = _sampled(names, groups, sample, seed, f"image files in {folder}")
        keep = set(picked)  # and every file that is not an image, to be counted as today
        entries = [(n, p) for n, p in entries if n in keep or not _is_image(p)]
    images, skipped = _scan(entries, limit)
    if not images:
        _no_readable_image(folder, skipped)
    records = [
        ImageRecord(name, str(path.resolve()), *(found.get(name) or (None, ())))
        for name, path in images
    ]
    return ImageList(
        records, tuple(skipped), source=str(folder), sample=sample, seed=seed, notes=notes
    )


def _sampled(
    items: list, groups: list[int | None], n: int, seed: int, what: str
) -> tuple[list, tuple[str, ...]]:
    """A stratified sample of ``items`` by ``groups``, and a note when it takes them all."""
    if n >= len(items):
        return items, (f"--sample {n} is not less than the {len(items)} {what}: all are used",)
    return [items[i] for i in sample_indices(groups, n, seed)], ()


def _scan(
    entries: list[tuple[str, Path]], limit: int | None
) -> tuple[list[tuple[str, Path]], list[SkippedFile]]:
    """The readable images among ``entries`` (in order) and the skipped files, test-decoding
    on two threads (:mod:`convdiff.inputs.scan`). With ``limit``, the scan goes window by
    window, each window the next files that could fill the limit, and stops once it is met."""
    images: list[tuple[str, Path]] = []
    skipped: list[SkippedFile] = []
    start = 0
    while start < len(entries) and (limit is None or len(images) < limit):
        need = len(entries) if limit is None else limit - len(images)
        end, count = start, 0
        while end < len(entries) and count < need:
            count += _is_image(entries[end][1])
            end += 1
        window = entries[start:end]
        problems = iter(check_files([str(p) for _, p in window if _is_image(p)]))
        for name, path in window:
            if not _is_image(path):
                skipped.append(SkippedFile(name, "not an image"))
            elif problem := next(problems):
                skipped.append(SkippedFile(name, f"unreadable image: {problem}"))
            else:
                images.append((name, path))
        start = end
    return images, skipped


def _no_readable_image(folder: Path, skipped: list[SkippedFile]) -> NoReturn:
    listed = ImageList([], tuple(skipped))
    raise DataError(
        f"no readable image in {folder}: {listed.describe_skipped()}",
        f"convdiff reads {' '.join(sorted(IMAGE_SUFFIXES))} files",
    )


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _hidden(relative: Path) -> bool:
    """Dot files and dot folders (.DS_Store, .git) are not data and not worth a skip count."""
    return any(part.startswith(".") for part in relative.parts)


Labels = dict[str, tuple[int, tuple[int, ...]]]


def _parse_label(text: str) -> tuple[int, tuple[int, ...]] | str:
    """A label as (primary, accepted), or an error message. Forms: ``281``, ``281,282,285``,
    ``tabby``, ``tiger cat``, ``n02123045``."""
    text = text.strip()
    if re.fullmatch(r"-?\d+(\s*,\s*-?\d+)*", text):
        indices = tuple(int(t) for t in text.split(","))
        bad = [i for i in indices if not 0 <= i < NUM_CLASSES]
        if bad:
            return f"label {bad[0]} is out of range 0..999"
        return indices[0], tuple(dict.fromkeys(indices))
    index = class_index(text)
    if index is None and WNID.match(text):
        index = wnid_class(text)
        if index is None:
            return f"label {text!r} is not one of the 1000 ImageNet-1k WordNet ids"
    if index is not None:
        return index, (index,)
    return f"label {text!r} is neither a class index 0..999 nor an ImageNet class name"


@dataclass(frozen=True)
class _LabelsFile:
    entries: Labels  # file name (or name without extension) -> (label, accepted)
    wnids: tuple[str, ...] = ()  # set instead when the file lists the 1000 WordNet ids


def _read_labels(path: Path) -> _LabelsFile:
    """Parse a labels file, its form detected: ``<file> <label>`` lines; a list of the 1000
    WordNet ids in class order (ILSVRC's LOC_synset_mapping.txt: ``n01440764 tench, ...``);
    ILSVRC's LOC_val_solution.csv; the devkit's validation ground truth (one ILSVRC2012_ID a
    line, mapped through the devkit's meta.mat)."""
    if not path.exists():
        raise DataError(f"labels file {path} does not exist", "pass an existing file with --labels")
    if not path.is_file():
        raise DataError(f"labels file {path} is not a file", "pass a text file with --labels")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "save it as UTF-8 text",
        ) from None
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if len(lines) == NUM_CLASSES and all(WNID.match(line.split()[0]) for _, line in lines):
        return _LabelsFile({}, tuple(line.split()[0] for _, line in lines))
    if imagenet.is_loc_solution(lines):
        solution = imagenet.read_loc_solution(path, lines)
        return _LabelsFile({k: (v[0], v) for k, v in solution.items()})
    if imagenet.is_devkit_ground_truth(lines):
        truth = imagenet.read_devkit_ground_truth(path, lines)
        return _LabelsFile({k: (v, (v,)) for k, v in truth.items()})
    table: Labels = {}
    for number, line in lines:
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: bad line {line!r}", _LABELS_FORM)
        parsed = _parse_label(parts[1])
        if isinstance(parsed, str):
            raise DataError(f"{path}:{number}: {parsed}", _LABELS_FORM)
        table[parts[0]] = parsed
    if not table:
        raise DataError(f"labels file {path} has no label lines", _LABELS_FORM)
    return _LabelsFile(table)


def _match_labels(path: Path, table: Labels, names: list[str], folder: Path) -> Labels:
    """Labels for each image name: by folder-relative path, else by file name when unique;
    a key without an image extension (LOC_val_solution.csv's ImageId) by the same without
    the image's extension.

    Entries naming no image are ignored (a full ground-truth file with a subset of the images
    is the usual case); a file that matches none of the images is an error.
    """
    by_basename: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}  # path and file name without the extension
    for name in names:
        by_basename.setdefault(name.rsplit("/", 1)[-1], []).append(name)
        stem = name.rsplit(".", 1)[0]
        for key in dict.fromkeys((stem, stem.rsplit("/", 1)[-1])):
            by_stem.setdefault(key, []).append(name)
    found: Labels = {}
    for key, value in table.items():
        key = key.replace("\\", "/").removeprefix("./")
        if key in by_basename.get(key.rsplit("/", 1)[-1], []):
            found[key] = value
        elif "/" not in key and len(by_basename.get(key, [])) == 1:
            found[by_basename[key][0]] = value
        elif Path(key).suffix.lower() not in IMAGE_SUFFIXES and len(by_stem.get(key, [])) == 1:
            found[by_stem[key][0]] = value
    if not found:
        raise DataError(
            f"labels file {path} names none of the {len(names)} images in {folder}",
            "its lines must start with the image's path relative to the folder or its file name",
        )
    return found


def _labels_from_subfolders(names: list[str], wnids: tuple[str, ...] | None) -> Labels:
    """Labels from the first path component when the images sit in class subfolders.

    No subfolder holds images: unlabelled. All image subfolders name classes: labelled.
    Some do and some do not: an error, since a typo would silently unlabel a class.
    ``wnids``: a labels file's WordNet ids in class order, else convdiff's ImageNet-1k list.
    """
    tops = sorted({n.split("/", 1)[0] for n in names if "/" in n})
    if not tops:
        return {}
    by_wnid = {w: i for i, w in enumerate(wnids)} if wnids else None
    labels: dict[str, int | None] = {}
    for top in tops:
        if top.isdigit():
            labels[top] = int(top) if int(top) < NUM_CLASSES else -1
        elif WNID.match(top):
            index = by_wnid.get(top) if by_wnid is not None else wnid_class(top)
            labels[top] = -1 if index is None else index
        else:
            labels[top] = class_index(top)
    unknown = [t for t, v in labels.items() if v is None]
    out_of_range = [t for t, v in labels.items() if v == -1]
    if out_of_range:
        if not WNID.match(out_of_range[0]):
            what = "out of range"
        elif by_wnid is not None:
            what = "not in the WordNet-id list"
        else:
            what = "not one of the 1000 ImageNet-1k WordNet ids"
        raise DataError(
            f"class subfolder '{out_of_range[0]}' is {what}",
            "class subfolders are named by class index 0..999, class name or WordNet id",
        )
    if len(unknown) == len(tops):
        return {}
    if unknown:
        raise DataError(
            f"subfolder '{unknown[0]}' names no ImageNet class, while "
            f"'{next(t for t in tops if labels[t] is not None)}' does",
            "name every class subfolder by class index 0..999, exact class name or WordNet id",
        )
    return {n: (labels[t], (labels[t],)) for n in names if "/" in n for t in [n.split("/", 1)[0]]}


# --- decoding ------------------------------------------------------------------------------


def decode(record: ImageRecord | str | Path) -> np.ndarray:
    """The image as uint8 HxWx3 RGB, upright.

    EXIF orientation is applied (a phone photo is stored sideways). Grayscale is repeated to
    three channels, palette images go through RGBA, alpha is dropped as torchvision's and
    Keras' loaders do (``Image.convert("RGB")``), 16-bit images keep their top 8 bits.
    """
    path = record.path if isinstance(record, ImageRecord) else str(record)
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode.startswith("I;16"):
                wide = np.asarray(image, dtype=np.uint16)
                return np.repeat((wide >> 8).astype(np.uint8)[..., None], 3, axis=2)
            if image.mode == "P":
                image = image.convert("RGBA")
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}", "remove or replace the file") from exc
    return np.ascontiguousarray(rgb)
