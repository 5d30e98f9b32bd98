"""Images in batches: decoded and preprocessed by a small pool of threads, a few batches ahead.

Why: a run over a validation set must not hold the whole preprocessed tensor (0.6 MB per image
at 224x224, 30 GB for ImageNet's 50,000) in memory or on disk. A batch is decoded once into one
tensor per preprocessing (the source's, and the target's own when asked), written as an .npz
the model workers read, and deleted by the caller once every model has run on it: memory and
disk stay O(batch x lookahead) whatever the dataset size.

Threads, not processes: Pillow decodes and resizes, and numpy normalizes, without holding the
GIL, so two threads decode about 1.8x as fast as one (measured by ``scripts/bench_scan.py``),
and they start nothing: a spawned process pool costs 0.1-0.9 s to start and breaks a library
caller's script that lacks an ``if __name__ == "__main__":`` guard (the children re-run it).
Numpy + PIL only, as all of :mod:`convdiff.inputs`.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convdiff.core.options import DEFAULT_STREAM_BATCH
from convdiff.inputs import preprocess
from convdiff.inputs.data import ImageRecord, decode
from convdiff.inputs.preprocess import PreprocessSpec

LOOKAHEAD = 2  # batches being decoded while the models run on the current one


@dataclass(frozen=True)
class Batch:
    """One batch of images, ready on disk: ``files[name]`` holds ``x`` (N, H, W, 3) float32
    in the preprocessing ``name`` (e.g. ``source``, ``target``)."""

    index: int  # 0-based batch number
    start: int  # index of its first image in the run's list
    count: int
    files: dict[str, Path]

    @property
    def stop(self) -> int:
        return self.start + self.count

    def remove(self) -> None:
        """Delete the batch's files (every model has run on them)."""
        for path in self.files.values():
            path.unlink(missing_ok=True)


def batch_count(images: int, batch_size: int) -> int:
    return -(-images // batch_size)


def _write_batch(
    folder: str, index: int, specs: dict[str, PreprocessSpec], paths: list[str]
) -> dict[str, str]:
    """In a decoding thread: decode each image once, preprocess it for every spec, save."""
    decoded = [decode(p) for p in paths]
    written = {}
    for name, spec in specs.items():
        h, w = spec.size
        x = np.empty((len(decoded), h, w, 3), np.float32)
        for i, rgb in enumerate(decoded):
            x[i] = preprocess.apply(spec, rgb)
        path = Path(folder) / f"batch-{index:06d}-{name}.npz"
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, x=x)
        os.replace(partial, path)
        written[name] = str(path)
    return written


class ImageStream:
    """Iterate over ``records`` in batches of ``batch_size``, from batch ``start_batch`` on.

    ``specs``: preprocessing name -> spec; each batch has one file per name, in ``folder``.
    ``threads``: decoding threads (0 decodes in the caller's thread, for tests and tiny runs).
    Use as a context manager: leaving it stops the decoding threads and removes batch files
    not handed out yet.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        specs: Mapping[str, PreprocessSpec],
        folder: Path,
        batch_size: int = DEFAULT_STREAM_BATCH,
        start_batch: int = 0,
        threads: int = 2,
    ) -> None:
        self.paths = [r.path for r in records]
        self.specs = dict(specs)
        self.folder = Path(folder)
        self.batch_size = batch_size
        self.start_batch = start_batch
        # one batch has nothing to overlap with: starting threads would only cost time
        self.threads = threads if self.batches - start_batch > 1 else 0
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[int, Future[dict[str, str]]]] = deque()

    @property
    def batches(self) -> int:
        return batch_count(len(self.paths), self.batch_size)

    def __enter__(self) -> ImageStream:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.threads > 0:
            self._executor = ThreadPoolExecutor(self.threads, "convdiff-decode")
        return self

    def __exit__(self, *exc: object) -> None:
        for _, future in self._pending:
            future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        for leftover in self.folder.glob("batch-*.npz"):
            leftover.unlink(missing_ok=True)
        self._pending.clear()

    def __iter__(self) -> Iterator[Batch]:
        upcoming = iter(range(self.start_batch, self.batches))
        for index in upcoming:
            self._submit(index)
            if len(self._pending) > LOOKAHEAD:
                break
        while self._pending:
            index, future = self._pending.popleft()
            files = future.result()  # a decoding error surfaces here, as the user's DataError
            next_index = next(upcoming, None)
            if next_index is not None:
                self._submit(next_index)
            start = index * self.batch_size
            count = min(self.batch_size, len(self.paths) - start)
            yield Batch(index, start, count, {k: Path(v) for k, v in files.items()})

    def _submit(self, index: int) -> None:
        start = index * self.batch_size
        args = (str(self.folder), index, self.specs, self.paths[start : start + self.batch_size])
        if self._executor is None:
            future: Future[dict[str, str]] = Future()
            try:
                future.set_result(_write_batch(*args))
            except Exception as exc:  # handed over where the batch is taken, as in a process
                future.set_exception(exc)
        else:
            future = self._executor.submit(_write_batch, *args)
        self._pending.append((index, future))


def save_images(
    path: Path,
    spec: PreprocessSpec,
    records: Sequence[ImageRecord],
    scratch: Path,
    batch_size: int = DEFAULT_STREAM_BATCH,
    threads: int = 2,
) -> Path:
    """All images of ``records``, preprocessed by ``spec``, into the .npy ``path`` (N, H, W, 3)
    float32, written batch by batch: memory O(batch) however many images. For commands that
    run the models on the same images many times (localize, repair): they decode once."""
    h, w = spec.size
    x = np.lib.format.open_memmap(path, "w+", np.float32, (len(records), h, w, 3))
    with ImageStream(records, {"x": spec}, scratch, batch_size, threads=threads) as stream:
        for batch in stream:
            with np.load(batch.files["x"]) as data:
                x[batch.start : batch.stop] = data["x"]
            batch.remove()
    x.flush()
    del x
    with contextlib.suppress(OSError):  # only when empty: the caller's folder, else
        scratch.rmdir()
    return path


__all__ = ["Batch", "ImageStream", "batch_count", "save_images"]
