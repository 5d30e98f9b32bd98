"""Benchmark how `convdiff run` scales with the number of images: memory, run folder, speed.

For each size N (default 500, 5,000 and 50,000) this script generates N JPEGs from the 16
embedded sample photos (seeded random crops, sizes of 160..800 px on the longest side, JPEG
qualities 50..95, one in ten grayscale; nothing is committed, the files are made at run time
by a pool of 2 processes; image i is the same in every set, so 500 ⊂ 5,000 ⊂ 50,000 and the
larger sets only add files), then runs MobileNetV2 (random weights) Keras -> TFLite on them:

- ``convdiff run mobilenetv2 --src keras --dst tflite --data SET ...`` as a subprocess, after
  one warm-up run on the smallest set that fills the artifact cache (so no measured run times
  the model build or the conversion);
- the baseline: one process (this script with ``--baseline``) that loads the warm-up run's
  .keras and .tflite, then decodes and preprocesses the same files in batches exactly as
  convdiff does (``convdiff.inputs.preprocess.batch``) and runs Keras' ``predict_on_batch`` and
  the LiteRT interpreter on each batch, counting top-1 agreement.

Both are timed from this process, alternately, so machine noise hits both alike. Measured:
wall seconds of the command and images/s = N / wall (model loading included on both sides);
convdiff's inference-phase images/s from report.json's timings; CPU seconds (user + system) of
the whole tree, which a busy machine disturbs less than wall time; peak resident memory of the
whole process tree (the command and every descendant, found through /proc ppid links and
sampled every 0.2 s; the RSS of the members is summed, so pages they share are counted once
per process: the peak of that sum); the run folder's size after the run (apparent bytes and
bytes on disk, hard links once). Goals (convdiff issue): peak memory and run folder at the
largest size at most 1.3x those at the smallest, throughput at least 0.9x the baseline's.

    .venv/bin/python scripts/bench_scale.py [--sizes 500,5000,50000] [--batch-size 32]
        [--repeats 3] [--large-repeats 1] [--work DIR] [--keep] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from bench_common import CONVDIFF, ROOT, timed
from PIL import Image, ImageOps

MODEL = "mobilenetv2"
LARGE = 20_000  # sets this large are run --large-repeats times (default once)
POLL_SECONDS = 0.2
GOAL_PEAK_RATIO = 1.3
GOAL_FOLDER_RATIO = 1.3
GOAL_THROUGHPUT_RATIO = 0.9
MB = 2**20


# --- the image sets ------------------------------------------------------------------------

_SOURCES: list[Image.Image] = []  # the sample photos, decoded once per generator process


def _load_sources() -> None:
    from convdiff.inputs.data import decode, sample_set

    _SOURCES.extend(Image.fromarray(decode(record)) for record in sample_set())


def render(index: int, seed: int) -> Image.Image:
    """Image ``index`` of every set made with ``seed``: a random crop (a quarter to all of the
    photo, aspect 3:4..4:3) of a random sample photo, resized to 160..800 px on its longest side,
    sometimes mirrored or grayscale. Depends only on (seed, index), so sets nest."""
    rng = np.random.default_rng([seed, index])
    photo = _SOURCES[int(rng.integers(len(_SOURCES)))]
    width, height = photo.size
    area = rng.uniform(0.25, 1.0) * width * height
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    crop_w = max(1, min(width, round(math.sqrt(area * aspect))))
    crop_h = max(1, min(height, round(math.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h))
    scale = int(rng.integers(160, 801)) / max(crop_w, crop_h)
    image = image.resize(
        (max(1, round(crop_w * scale)), max(1, round(crop_h * scale))), Image.Resampling.BILINEAR
    )
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.1:
        image = image.convert("L")
    return image


def _write(job: tuple[int, int, str]) -> int:
    """Write image ``index`` as a JPEG (to a temporary name first: an interrupted run leaves no
    truncated file for a reused --work folder); its size in bytes."""
    index, seed, path = job
    rng = np.random.default_rng([seed, index, 1])
    partial = f"{path}.partial"
    render(index, seed).save(partial, "JPEG", quality=int(rng.integers(50, 96)))
    os.replace(partial, path)
    return os.path.getsize(path)


def generate(pool: Path, count: int, seed: int) -> None:
    """Images 0..count-1 in ``pool`` (``000123.jpg``), making only the missing ones."""
    pool.mkdir(parents=True, exist_ok=True)
    jobs = [
        (i, seed, str(pool / f"{i:06d}.jpg"))
        for i in range(count)
        if not (pool / f"{i:06d}.jpg").exists()
    ]
    if not jobs:
        return
    started = time.perf_counter()
    step = max(1, len(jobs) // 10)
    written = 0
    with ProcessPoolExecutor(2, initializer=_load_sources) as executor:
        for done, size in enumerate(executor.map(_write, jobs, chunksize=32), 1):
            written += size
            if done % step == 0 or done == len(jobs):
                progress(
                    f"generated {done}/{len(jobs)} images ({written / MB:.0f} MB, "
                    f"{time.perf_counter() - started:.0f} s)"
                )


def image_set(work: Path, pool: Path, count: int) -> Path:
    """A flat folder of the first ``count`` pool images (hard links: no copy, no extra disk)."""
    folder = work / f"set-{count}"
    folder.mkdir(exist_ok=True)
    for i in range(count):
        name = f"{i:06d}.jpg"
        if not (folder / name).exists():
            try:
                os.link(pool / name, folder / name)
            except OSError:  # another filesystem
                shutil.copyfile(pool / name, folder / name)
    return folder


# --- measures ------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> tuple[int, int]:
    """Apparent bytes (file sizes) and bytes on disk (allocated blocks) of everything under
    ``folder``; a file hard-linked twice counts once, symbolic links are not followed."""
    seen: set[tuple[int, int]] = set()
    apparent = on_disk = 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            apparent += st.st_size
            on_disk += st.st_blocks * 512
    return apparent, on_disk


def children_cpu_s() -> float:
    """User + system seconds of this process's reaped descendants so far: a command's whole
    tree, workers included, once it has exited (each parent reaps its children and their
    times roll up), however busy the machine is with other work."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class SizeResult:
    """The figures of one set size: medians over its repeats, and every repeat's values."""

    images: int
    repeats: int
    convdiff_wall_s: float
    convdiff_images_per_s: float
    infer_images_per_s: float  # N / report.json timings.infer.seconds
    baseline_wall_s: float
    baseline_images_per_s: float
    throughput_ratio: float  # convdiff images/s over baseline images/s
    peak_rss_mb: float  # peak of the summed RSS of convdiff's process tree
    baseline_peak_rss_mb: float
    folder_mb: float  # run folder, apparent size
    folder_disk_mb: float  # run folder, allocated blocks
    top1_discrepancy: float  # convdiff's report
    baseline_top1_discrepancy: float
    convdiff_cpu_s: float  # user + system seconds of the whole tree (robust to a busy machine)
    baseline_cpu_s: float
    cpu_ratio: float  # baseline CPU seconds over convdiff's: the throughput ratio in CPU time
    timings: dict[str, float] = field(default_factory=dict)  # convdiff phase seconds (median)
    all_runs: dict[str, list[float]] = field(default_factory=dict)


def convdiff_command(data: Path, out: Path, cache: Path, batch_size: int) -> list[str]:
    return [
        *CONVDIFF,
        "run",
        MODEL,
        "--src",
        "keras",
        "--dst",
        "tflite",
        "--weights",
        "random",
        "--data",
        str(data),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--batch-size",
        str(batch_size),
        "--quiet",
    ]


def bench_size(
    count: int,
    data: Path,
    warm: dict,
    work: Path,
    repeats: int,
    batch_size: int,
    env: dict[str, str],
    reference: SizeResult | None = None,
) -> SizeResult:
    """Baseline and convdiff on one set, alternately, ``repeats`` times. With ``reference``
    (a smaller set's result) the baseline is not run: its rate there stands for this size."""
    files = work / f"files-{count}.txt"
    files.write_text("".join(f"{p}\n" for p in sorted(map(str, data.iterdir()))))
    runs: dict[str, list[float]] = {}
    phases: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)

    for i in range(repeats):
        if reference is not None:
            add("baseline_wall_s", count / reference.baseline_images_per_s)
            add("baseline_cpu_s", reference.baseline_cpu_s / reference.images * count)
            add("baseline_peak_rss_mb", reference.baseline_peak_rss_mb)
            add("baseline_top1_discrepancy", float("nan"))
        else:
            _run_baseline(count, i, warm, files, batch_size, env, work, add)
        progress(f"{count} images, run {i + 1}/{repeats}: convdiff run")
        run_dir = work / "runs" / f"{count}-{i}"
        cpu = children_cpu_s()
        wall, peak, _ = timed(
            convdiff_command(data, run_dir, warm["cache"], batch_size),
            env,
            POLL_SECONDS,
            work / f"convdiff-{count}-{i}.log",
        )
        add("convdiff_cpu_s", children_cpu_s() - cpu)
        report = json.loads((run_dir / "report.json").read_text())
        if report["images"] != count:
            raise RuntimeError(f"convdiff ran {report['images']} images, not {count}")
        apparent, on_disk = folder_bytes(run_dir)
        add("convdiff_wall_s", wall)
        add("peak_rss_mb", peak)
        add("folder_mb", apparent / MB)
        add("folder_disk_mb", on_disk / MB)
        add("top1_discrepancy", report["top1_discrepancy"])
        add("infer_s", report["timings"]["infer"]["seconds"])
        for phase, timing in report["timings"].items():
            phases.setdefault(phase, []).append(timing["seconds"])
        shutil.rmtree(run_dir)  # at 50,000 images today's run folder holds a 30 GB tensor
        progress(
            f"  baseline {runs['baseline_wall_s'][-1]:.1f} s, convdiff {wall:.1f} s, "
            f"peak {peak:.0f} MB, folder {apparent / MB:.1f} MB"
        )
    med = {k: statistics.median(v) for k, v in runs.items()}
    return SizeResult(
        images=count,
        repeats=repeats,
        convdiff_wall_s=med["convdiff_wall_s"],
        convdiff_images_per_s=count / med["convdiff_wall_s"],
        infer_images_per_s=count / med["infer_s"],
        baseline_wall_s=med["baseline_wall_s"],
        baseline_images_per_s=count / med["baseline_wall_s"],
        throughput_ratio=med["baseline_wall_s"] / med["convdiff_wall_s"],
        peak_rss_mb=med["peak_rss_mb"],
        baseline_peak_rss_mb=med["baseline_peak_rss_mb"],
        folder_mb=med["folder_mb"],
        folder_disk_mb=med["folder_disk_mb"],
        top1_discrepancy=med["top1_discrepancy"],
        baseline_top1_discrepancy=med["baseline_top1_discrepancy"],
        convdiff_cpu_s=med["convdiff_cpu_s"],
        baseline_cpu_s=med["baseline_cpu_s"],
        cpu_ratio=med["baseline_cpu_s"] / med["convdiff_cpu_s"],
        timings={p: statistics.median(v) for p, v in phases.items()},
        all_runs=runs,
    )


def _run_baseline(
    count: int,
    i: int,
    warm: dict,
    files: Path,
    batch_size: int,
    env: dict[str, str],
    work: Path,
    add: Callable[[str, float], None],
) -> None:
    """One run of the one-process baseline on ``files``; its figures go to ``add``."""
    progress(f"{count} images, run {i + 1}: baseline")
    cpu = children_cpu_s()
    wall, peak, out = timed(
        [sys.executable, __file__, "--baseline", warm["source"], warm["target"], str(files)]
        + ["--batch-size", str(batch_size)],
        env,
        POLL_SECONDS,
        work / f"baseline-{count}-{i}.log",
    )
    add("baseline_cpu_s", children_cpu_s() - cpu)
    base = json.loads(out.strip().splitlines()[-1])
    if base["images"] != count:
        raise RuntimeError(f"the baseline ran {base['images']} images, not {count}")
    add("baseline_wall_s", wall)
    add("baseline_peak_rss_mb", peak)
    add("baseline_top1_discrepancy", base["top1_discrepancy"])


def warm_up(data: Path, work: Path, batch_size: int, env: dict[str, str]) -> dict:
    """One `convdiff run` that builds the model and converts it into the cache: the cache, the
    .keras source and .tflite target it left (the baseline loads those very files)."""
    progress("warm-up run (model build and conversion into the cache)")
    cache, out = work / "cache", work / "warm"
    timed(convdiff_command(data, out, cache, batch_size), env, POLL_SECONDS, work / "warm.log")
    report = json.loads((out / "report.json").read_text())
    return {
        "cache": cache,
        "source": report["source"]["path"],
        "target": report["chain"][-1]["artifact"]["path"],
        "preprocessing": report["preprocessing"],
    }


# --- the baseline --------------------------------------------------------------------------


def baseline(source: str, target: str, files: str, batch_size: int) -> None:
    """Both models in this one process over the files of ``files`` (one path a line), batch by
    batch, with the frameworks' own batched calls. Prints JSON on its last line."""
    started = time.perf_counter()
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from convdiff.inputs.data import ImageRecord
    from convdiff.inputs.preprocess import batch
    from convdiff.zoo import zoo_model

    spec = zoo_model(MODEL).variant("keras").preprocess
    model = keras.saving.load_model(source, compile=False, safe_mode=True)
    interpreter = Interpreter(model_path=target)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    loaded = time.perf_counter() - started
    paths = Path(files).read_text().splitlines()
    shape: tuple[int, ...] = ()
    differ = 0
    for start in range(0, len(paths), batch_size):
        x = batch(spec, [ImageRecord(p, p) for p in paths[start : start + batch_size]])
        src = np.asarray(model.predict_on_batch(x))
        if x.shape != shape:  # the first batch, and a shorter last one
            interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=True)
            interpreter.allocate_tensors()
            shape = x.shape
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        dst = interpreter.get_tensor(out["index"])
        differ += int(np.sum(src.argmax(1) != dst.argmax(1)))
    result = {
        "images": len(paths),
        "top1_discrepancy": 100 * differ / len(paths),
        "load_s": loaded,
        "wall_s": time.perf_counter() - started,
    }
    print(json.dumps(result))


# --- the table -----------------------------------------------------------------------------


def goals(results: list[SizeResult]) -> list[tuple[str, float, float, bool]]:
    """(what, value, bound, met) for each goal: largest against smallest set, and throughput
    at each size."""
    checks: list[tuple[str, float, float, bool]] = []
    if len(results) > 1:
        small, large = results[0], results[-1]
        name = f"({large.images})/({small.images})"
        peak = large.peak_rss_mb / small.peak_rss_mb
        folder = large.folder_mb / small.folder_mb
        checks.append((f"peak RSS {name}", peak, GOAL_PEAK_RATIO, peak <= GOAL_PEAK_RATIO))
        met = folder <= GOAL_FOLDER_RATIO
        checks.append((f"run folder {name}", folder, GOAL_FOLDER_RATIO, met))
    for r in results:
        met = r.throughput_ratio >= GOAL_THROUGHPUT_RATIO
        checks.append(
            (
                f"throughput / baseline at {r.images}",
                r.throughput_ratio,
                GOAL_THROUGHPUT_RATIO,
                met,
            )
        )
    return checks


def render_table(results: list[SizeResult]) -> str:
    lines = [
        "| images | runs | convdiff wall s | images/s | infer phase images/s | "
        "baseline images/s | ratio | CPU s | baseline CPU s | CPU ratio | peak RSS MB | "
        "baseline peak RSS MB | run folder MB | on disk MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.images:,} | {r.repeats} | {r.convdiff_wall_s:.1f} | "
            f"{r.convdiff_images_per_s:.1f} | {r.infer_images_per_s:.1f} | "
            f"{r.baseline_images_per_s:.1f} | {r.throughput_ratio:.2f} | "
            f"{r.convdiff_cpu_s:.1f} | {r.baseline_cpu_s:.1f} | {r.cpu_ratio:.2f} | "
            f"{r.peak_rss_mb:.0f} | "
            f"{r.baseline_peak_rss_mb:.0f} | {r.folder_mb:.1f} | {r.folder_disk_mb:.1f} |"
        )
    lines.append("")
    for what, value, bound, met in goals(results):
        sign = "<=" if "throughput" not in what else ">="
        lines.append(f"- {what} = {value:.2f} ({sign} {bound}): {'met' if met else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000,50000", help="comma-separated image counts")
    parser.add_argument("--batch-size", type=int, default=32, help="of convdiff and the baseline")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (median)")
    parser.add_argument(
        "--large-repeats", type=int, default=1, help=f"runs per size of {LARGE:,} or more"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the generated images")
    parser.add_argument("--work", type=Path, help="work folder (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--baseline-max",
        type=int,
        default=None,
        help="run the baseline only on sets of at most this many images; larger sets are "
        "compared with the rate it had on the largest of those (it runs at a steady rate)",
    )
    parser.add_argument("--baseline", nargs=3, metavar=("SOURCE", "TARGET", "FILES"))
    args = parser.parse_args()
    if args.baseline:
        baseline(*args.baseline, args.batch_size)
        return
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    work = args.work or Path(tempfile.mkdtemp(prefix="convdiff-bench-scale-"))
    existed = args.work is not None and work.exists()
    work.mkdir(parents=True, exist_ok=True)
    before = set(work.iterdir())  # a folder the user gave: remove only what this run adds
    progress(f"work folder {work}")
    results: list[SizeResult] = []
    failed: dict[str, object] = {}
    try:
        pool = work / f"pool-seed{args.seed}"
        generate(pool, sizes[-1], args.seed)
        sets = {n: image_set(work, pool, n) for n in sizes}
        warm = warm_up(sets[sizes[0]], work, args.batch_size, env)
        for n in sizes:
            repeats = args.large_repeats if n >= LARGE else args.repeats
            skip = args.baseline_max is not None and n > args.baseline_max and results
            reference = results[-1] if skip else None
            try:
                results.append(
                    bench_size(n, sets[n], warm, work, repeats, args.batch_size, env, reference)
                )
            except (RuntimeError, OSError, KeyError, ValueError) as exc:
                # e.g. killed for memory at 50,000: keep the smaller sizes' figures
                failed = {"images": n, "error": f"{type(exc).__name__}: {exc}"}
                progress(f"{n} images failed, stopping: {failed['error']}")
                break
    finally:
        if not args.keep:
            for child in set(work.iterdir()) - before:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
            if not existed:
                work.rmdir()
    if results:
        print(render_table(results))
    if failed:
        print(f"- {failed['images']:,} images: FAILED ({failed['error']})")
    figures = {
        "model": MODEL,
        "batch_size": args.batch_size,
        "preprocessing": warm["preprocessing"],
        "sizes": [asdict(r) for r in results],
        "goals": [
            {"goal": what, "value": value, "bound": bound, "met": met}
            for what, value, bound, met in goals(results)
        ],
        "failed": failed or None,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
