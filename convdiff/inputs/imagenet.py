"""ImageNet's own label files: WordNet ids, the Kaggle/ILSVRC localization CSV, the devkit's
ground truth with its meta.mat.

Why here and not in the labels-file parser: these files name classes by WordNet id or by the
devkit's ILSVRC2012_ID (1..1000, an order of its own), never by the class index convdiff uses
(torchvision's order, which is the sorted order of the 1000 ids). This module turns both into
class indices with the id list shipped as package data (convdiff/data/imagenet_wnids.json,
written by scripts/make_imagenet_wnids.py).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

from convdiff.core.errors import DataError

_DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # convdiff/data: package data
WNID = re.compile(r"^n\d{8}$")
LOC_HEADER = "imageid,predictionstring"
DEVKIT_IMAGE = "ILSVRC2012_val_{:08d}.JPEG"  # line i of the devkit's ground truth
META_FIX = "put the devkit's data/meta.mat (ILSVRC2012_devkit_t12.tar.gz) beside it"

Lines = list[tuple[int, str]]  # (line number, stripped text), blank and comment lines left out


@functools.cache
def wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 WordNet ids in class index order."""
    return tuple(json.loads((_DATA_DIR / "imagenet_wnids.json").read_text(encoding="utf-8")))


@functools.cache
def _index_by_wnid() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids())}


def wnid_class(wnid: str) -> int | None:
    """The class index of an ImageNet-1k WordNet id (``n01440764`` -> 0), or None."""
    return _index_by_wnid().get(wnid)


def is_loc_solution(lines: Lines) -> bool:
    """The Kaggle/ILSVRC ``LOC_val_solution.csv`` form: an ``ImageId,PredictionString`` header."""
    return bool(lines) and lines[0][1].replace(" ", "").casefold() == LOC_HEADER


def is_devkit_ground_truth(lines: Lines) -> bool:
    """The devkit's ``ILSVRC2012_validation_ground_truth.txt`` form: one number per line."""
    return bool(lines) and all(text.isdigit() for _, text in lines)


def read_loc_solution(path: Path, lines: Lines) -> dict[str, tuple[int, ...]]:
    """ImageId (no extension) -> the classes of its boxes, first box first.

    Lines: ``ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295``.
    """
    found: dict[str, tuple[int, ...]] = {}
    for number, text in lines[1:]:
        image, _, boxes = text.partition(",")
        ids = [t for t in boxes.split() if WNID.match(t)]
        if not image.strip() or not ids:
            raise DataError(
                f"{path}:{number}: bad line {text!r}",
                "expected 'ImageId,<WordNet id> x y x y ...' (ILSVRC's LOC_val_solution.csv)",
            )
        classes = [wnid_class(w) for w in ids]
        if None in classes:
            unknown = ids[classes.index(None)]
            raise DataError(
                f"{path}:{number}: {unknown} is not one of the 1000 ImageNet-1k WordNet ids",
                "convdiff labels the 1000 ILSVRC2012 classes",
            )
        found[image.strip()] = tuple(dict.fromkeys(c for c in classes if c is not None))
    return found


def read_devkit_ground_truth(path: Path, lines: Lines) -> dict[str, int]:
    """Image file name -> class index: line i holds the ILSVRC2012_ID of
    ``ILSVRC2012_val_{i:08d}.JPEG``, mapped through the devkit's meta.mat."""
    meta = find_meta(path)
    by_id = devkit_ids(meta)
    found: dict[str, int] = {}
    for number, text in lines:
        index = by_id.get(int(text))
        if index is None:
            raise DataError(
                f"{path}:{number}: ILSVRC2012_ID {text} is not one of the 1000 classes of {meta}",
                "use the ground truth and meta.mat of the same ILSVRC2012 devkit",
            )
        found[DEVKIT_IMAGE.format(number)] = index
    return found


def find_meta(ground_truth: Path) -> Path:
    """The devkit's meta.mat: beside the ground-truth file, else in ``../data/``."""
    places = [ground_truth.parent / "meta.mat", ground_truth.parent.parent / "data" / "meta.mat"]
    for place in places:
        if place.is_file():
            return place
    raise DataError(
        f"{ground_truth} holds ILSVRC2012_IDs, whose classes are in the devkit's meta.mat, "
        f"found neither at {places[0]} nor at {places[1]}",
        META_FIX,
    )


def devkit_ids(meta: Path) -> dict[int, int]:
    """ILSVRC2012_ID -> class index, for the 1000 leaf synsets (``num_children == 0``) of the
    devkit's meta.mat (a MATLAB struct array ``synsets``: ILSVRC2012_ID, WNID, words, ...)."""
    try:
        import scipy.io  # only for this file format; a dependency of scikit-image
    except ImportError:
        raise DataError(
            f"reading {meta} needs scipy, which is not installed", "pip install scipy"
        ) from None
    try:
        synsets = np.atleast_1d(scipy.io.loadmat(str(meta), squeeze_me=True)["synsets"])
        rows = [(int(s["ILSVRC2012_ID"]), str(s["WNID"]), int(s["num_children"])) for s in synsets]
    except Exception as exc:  # scipy raises many types for a file that is not a devkit's
        raise DataError(
            f"{meta} is not the devkit's meta.mat ({type(exc).__name__}: {exc})", META_FIX
        ) from None
    found: dict[int, int] = {}
    for ilsvrc_id, wnid, count in rows:
        index = wnid_class(wnid)
        if count == 0 and index is not None:
            found[ilsvrc_id] = index
    return found
