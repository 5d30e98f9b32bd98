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

import numpy as np
from PIL import Image, ImageOps

from convdiff.core.errors import DataError

NUM_CLASSES = 1000
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # convdiff/data: package data
_WNID = re.compile(r"^n\d{8}$")
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
    smaller data set.
    """

    def __init__(self, records: list[ImageRecord], skipped_files: tuple[SkippedFile, ...] = ()):
        super().__init__(records)
        self.skipped_files = skipped_files

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


def image_folder(folder: Path, labels: Path | None = None, limit: int | None = None) -> ImageList:
    """Every image under ``folder`` (recursive, sorted), named by its folder-relative path.

    Labels come from ``labels`` when given (lines ``<file> <class>``, the form of Caffe's
    ILSVRC2012 ``val.txt``), else from class subfolders named by class index (``281/``),
    exact class name (``tabby/``) or WordNet id (``n02123045/``; needs all 1000 of them, whose
    sorted order is the class order, or a labels file listing the 1000 ids in class order).
    Files that are not images or do not decode are skipped and counted, not fatal.
    ``limit`` stops the scan after that many readable images (each file is test-decoded, so
    a 50,000-image folder costs about a minute to scan in full).
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
    images, skipped = [], []
    for path in files:
        if limit is not None and len(images) >= limit:
            break
        name = path.relative_to(folder).as_posix()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(SkippedFile(name, "not an image"))
            continue
        problem = _unreadable(path)
        if problem:
            skipped.append(SkippedFile(name, f"unreadable image: {problem}"))
        else:
            images.append((name, path))
    if not images:
        listed = ImageList([], tuple(skipped))
        raise DataError(
            f"no readable image in {folder}: {listed.describe_skipped()}",
            f"convdiff reads {' '.join(sorted(IMAGE_SUFFIXES))} files",
        )
    names = [name for name, _ in images]
    # class folders are judged on every subfolder, not only the ones a limited scan reached
    folders = {p.relative_to(folder).parts[0] for p in files if p.parent != folder}
    if parsed is None:
        found = _labels_from_subfolders(names, folders, None)
    elif parsed.wnids:
        found = _labels_from_subfolders(names, folders, parsed.wnids)
    else:
        found = _match_labels(Path(labels), parsed.entries, names, folder)
    records = [
        ImageRecord(name, str(path.resolve()), *(found.get(name) or (None, ())))
        for name, path in images
    ]
    return ImageList(records, tuple(skipped))


def _hidden(relative: Path) -> bool:
    """Dot files and dot folders (.DS_Store, .git) are not data and not worth a skip count."""
    return any(part.startswith(".") for part in relative.parts)


def _unreadable(path: Path) -> str:
    """Why a file does not decode as an image ('' when it does). Decodes the pixels, since a
    truncated file opens fine and fails only when they are read; JPEGs are decoded in draft
    mode (DCT-scaled, about 3x faster), which still reads every byte."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
    except Exception as exc:  # PIL raises many types for broken files
        message = str(exc).replace(f" {str(path)!r}", "").splitlines()
        return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")
    return ""


Labels = dict[str, tuple[int, tuple[int, ...]]]


def _parse_label(text: str) -> tuple[int, tuple[int, ...]] | str:
    """A label as (primary, accepted), or an error message. Forms: ``281``, ``281,282,285``,
    ``tabby``, ``tiger cat``."""
    text = text.strip()
    if re.fullmatch(r"-?\d+(\s*,\s*-?\d+)*", text):
        indices = tuple(int(t) for t in text.split(","))
        bad = [i for i in indices if not 0 <= i < NUM_CLASSES]
        if bad:
            return f"label {bad[0]} is out of range 0..999"
        return indices[0], tuple(dict.fromkeys(indices))
    index = class_index(text)
    if index is not None:
        return index, (index,)
    if _WNID.match(text):
        return (
            f"label {text!r} is a WordNet id and convdiff ships no WordNet-id list; "
            "use the class index or name"
        )
    return f"label {text!r} is neither a class index 0..999 nor an ImageNet class name"


@dataclass(frozen=True)
class _LabelsFile:
    entries: Labels  # file name -> (label, accepted)
    wnids: tuple[str, ...] = ()  # set instead when the file lists the 1000 WordNet ids


def _read_labels(path: Path) -> _LabelsFile:
    """Parse a labels file: ``<file> <label>`` lines, or a list of the 1000 WordNet ids in class
    order (ILSVRC's LOC_synset_mapping.txt form: ``n01440764 tench, Tinca tinca``)."""
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
    if len(lines) == NUM_CLASSES and all(_WNID.match(line.split()[0]) for _, line in lines):
        return _LabelsFile({}, tuple(line.split()[0] for _, line in lines))
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
    """Labels for each image name: by folder-relative path, else by file name when unique.

    Entries naming no image are ignored (a full ground-truth file with a subset of the images
    is the usual case); a file that matches none of the images is an error.
    """
    by_basename: dict[str, list[str]] = {}
    for name in names:
        by_basename.setdefault(name.rsplit("/", 1)[-1], []).append(name)
    found: Labels = {}
    for key, value in table.items():
        key = key.replace("\\", "/").removeprefix("./")
        if key in by_basename.get(key.rsplit("/", 1)[-1], []):
            found[key] = value
        elif "/" not in key and len(by_basename.get(key, [])) == 1:
            found[by_basename[key][0]] = value
    if not found:
        raise DataError(
            f"labels file {path} names none of the {len(names)} images in {folder}",
            "its lines must start with the image's path relative to the folder or its file name",
        )
    return found


def _labels_from_subfolders(
    names: list[str], folders: set[str], wnids: tuple[str, ...] | None
) -> Labels:
    """Labels from the first path component when the images sit in class subfolders.

    No subfolder holds images: unlabelled. All image subfolders name classes: labelled.
    Some do and some do not: an error, since a typo would silently unlabel a class.
    ``folders``: every top-level subfolder holding files (WordNet ids are numbered by their
    rank among all of them).
    """
    tops = sorted({n.split("/", 1)[0] for n in names if "/" in n})
    if not tops:
        return {}
    if wnids is None and all(_WNID.match(t) for t in tops):
        all_ids = sorted(f for f in folders if _WNID.match(f))
        if len(all_ids) != NUM_CLASSES:
            raise DataError(
                f"the subfolders are WordNet ids ({tops[0]}, ...) but only {len(all_ids)} of the "
                "1000 classes are present, and convdiff ships no WordNet-id list",
                "pass --labels with the 1000 ids in class order (ILSVRC's LOC_synset_mapping.txt)"
                " or rename the subfolders to class indices 0..999",
            )
        wnids = tuple(all_ids)  # the standard class order is the sorted order of the 1000 ids
    by_wnid = {w: i for i, w in enumerate(wnids)} if wnids else {}
    labels: dict[str, int | None] = {}
    for top in tops:
        if top.isdigit():
            labels[top] = int(top) if int(top) < NUM_CLASSES else -1
        elif _WNID.match(top):
            labels[top] = by_wnid.get(top, -1) if by_wnid else None
        else:
            labels[top] = class_index(top)
    unknown = [t for t, v in labels.items() if v is None]
    out_of_range = [t for t, v in labels.items() if v == -1]
    if out_of_range:
        what = "not in the WordNet-id list" if _WNID.match(out_of_range[0]) else "out of range"
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
