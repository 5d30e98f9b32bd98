"""Which image files decode: a test-decode of each file, two at a time for big folders.

Why every file is decoded: a truncated file opens fine and fails only when its pixels are read.
JPEGs are decoded in draft mode (DCT-scaled), which still reads every byte.

Why threads and not processes: Pillow releases the GIL while it decodes, so two threads use
both cores of a small machine for the part that costs; a process pool would add a start-up of
about 0.8 s (a spawned interpreter importing PIL, measured by scripts/bench_scan.py) and would
break library callers whose script lacks an ``if __name__ == "__main__":`` guard (``spawn``
and ``forkserver`` re-import the main script), while ``fork`` is unsafe in a process that runs
threads. Threads import nothing, start nothing and cannot pull a framework into the
orchestrator.

Results are the same whichever way they are computed: one message per file, in input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

POOL_MIN_FILES = 256  # fewer files than this: checked in the calling thread
CHUNK = 64  # files per task: big enough to amortize a task, small enough to share the work
MAX_THREADS = 2


def unreadable(path: str) -> str:
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


def check_chunk(paths: Sequence[str]) -> list[str]:
    """:func:`unreadable` of each path, in order, in the calling thread."""
    return [unreadable(p) for p in paths]


def threads_for(count: int) -> int:
    """How many threads check ``count`` files: 1 below :data:`POOL_MIN_FILES`, else up to
    :data:`MAX_THREADS`, never more than the cores this process may use."""
    if count < POOL_MIN_FILES:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_THREADS, cores or 1))


def check_files(paths: Sequence[str], threads: int | None = None) -> list[str]:
    """:func:`unreadable` of every path, in order. ``threads``: None picks
    :func:`threads_for`; 1 checks in the calling thread."""
    paths = [str(p) for p in paths]
    threads = threads_for(len(paths)) if threads is None else threads
    if threads <= 1 or len(paths) <= CHUNK:
        return check_chunk(paths)
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="convdiff-scan") as pool:
        return [message for chunk in pool.map(check_chunk, chunks) for message in chunk]
