"""Image tensors on disk, read no more than a task needs.

Why: a localization or repair over a large image set keeps its preprocessed images in one
``.npy`` file, which every task opens as a memory map and reads a batch (or a few chosen
images) at a time, so no process holds the whole set. The small tensors of a run (calibration
images, one streamed batch) stay ``.npz`` files with the images under ``x``; both read alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def open_images(path: str | Path) -> np.ndarray:
    """The NHWC images of ``path``: an ``.npy`` mapped into memory (read when indexed), or
    ``x`` of an ``.npz`` (read whole: those files are small by design)."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    with np.load(path) as data:
        return data["x"]


def read_images(
    images: str | Path | np.ndarray,
    indices: Sequence[int] | None = None,
    limit: int | None = None,
) -> np.ndarray:
    """The images ``indices`` (all, or the first ``limit``) of a file or of what
    :func:`open_images` returned, as float32 in memory."""
    x = images if isinstance(images, np.ndarray) else open_images(images)
    if indices is not None:
        x = x[np.asarray(list(indices), dtype=np.int64)]
    elif limit is not None:
        x = x[:limit]
    return np.asarray(x, dtype=np.float32)


__all__ = ["open_images", "read_images"]
