"""Time the image-folder scan: the readability check in one thread, on two threads (what
convdiff does) and on a pool of two spawned processes (the alternative it rejected), and
``--sample 500``.

Writes N JPEGs (default 5,000) of ImageNet's typical size (about 500x375) into a temporary
folder laid out as ImageNet's validation set by class (50 WordNet-id folders), cut from the
embedded sample photographs with a seeded generator; times each way of scanning it three
times (best kept) and deletes the folder. Usage:
``flock /tmp/convdiff-heavy.lock python scripts/bench_scan.py [N]``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from convdiff.inputs import data, scan
from convdiff.inputs.imagenet import wnids

CLASSES = 50


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs cut from the sample photographs (random crop, resize, quality)."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(r.path).convert("RGB") for r in data.sample_set()]
    ids = wnids()[:: 1000 // CLASSES][:CLASSES]
    paths = []
    for i in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        w, h = photo.size
        cw, ch = int(rng.integers(w // 2, w + 1)), int(rng.integers(h // 2, h + 1))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        size = (int(rng.integers(400, 501)), int(rng.integers(300, 376)))
        image = photo.crop((x, y, x + cw, y + ch)).resize(size)
        path = folder / ids[i % CLASSES] / f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        path.parent.mkdir(exist_ok=True)
        image.save(path, quality=int(rng.integers(75, 96)))
        paths.append(path)
    return paths


def check_on_processes(paths: list[str], processes: int = 2) -> list[str]:
    """The same check on a spawned process pool, start-up included (as a scan would pay)."""
    chunks = [paths[i : i + scan.CHUNK] for i in range(0, len(paths), scan.CHUNK)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        return [m for chunk in pool.map(scan.check_chunk, chunks) for m in chunk]


def best_of(runs: int, work: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 5000
    folder = Path(tempfile.mkdtemp(prefix="convdiff-bench-scan-"))
    try:
        start = time.perf_counter()
        paths = [str(p) for p in write_images(folder, count)]
        written = time.perf_counter() - start
        megabytes = sum(Path(p).stat().st_size for p in paths) / 1e6
        serial_s, serial = best_of(3, lambda: scan.check_files(paths, threads=1))
        threads_s, threaded = best_of(3, lambda: scan.check_files(paths, threads=2))
        pooled_s, pooled = best_of(3, lambda: check_on_processes(paths))
        startup_s, _ = best_of(3, lambda: check_on_processes(paths[:2]))
        folder_s, records = best_of(3, lambda: data.image_folder(folder))
        threads_for = scan.threads_for
        scan.threads_for = lambda count: 1  # the scan as it was: one file after another
        try:
            folder_1_s, _ = best_of(3, lambda: data.image_folder(folder))
        finally:
            scan.threads_for = threads_for
        sample_s, sampled = best_of(3, lambda: data.image_folder(folder, sample=500, seed=0))
        figures = {
            "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),  # other work competing
            "images": count,
            "megabytes": round(megabytes, 1),
            "write_seconds": round(written, 1),
            "check_1_thread_seconds": round(serial_s, 2),
            "check_2_threads_seconds": round(threads_s, 2),
            "check_2_spawned_processes_seconds": round(pooled_s, 2),
            "process_pool_startup_seconds": round(startup_s, 2),
            "seconds_per_50000_one_thread": round(serial_s * 50000 / count, 1),
            "speedup_threads": round(serial_s / threads_s, 2),
            "speedup_processes": round(serial_s / pooled_s, 2),
            "same_results": serial == threaded == pooled,
            "image_folder_1_thread_seconds": round(folder_1_s, 2),
            "image_folder_seconds": round(folder_s, 2),
            "image_folder_sample_500_seconds": round(sample_s, 2),
            "labelled": sum(1 for r in records if r.accepted),
            "sample_500_classes": len({r.label for r in sampled}),
        }
        print(json.dumps(figures, indent=1))
    finally:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
