"""Benchmark `convdiff run` tf -> tflite against the bare framework work (the baseline).

For each model: one warm-up `convdiff run` builds the SavedModel (cached) and the input
tensor; then, alternately and ``--runs`` times, the baseline script (bench_baseline_tf_tflite.py:
load, infer, convert, infer, in one process) and `convdiff run` on that same SavedModel with
``--no-cache``. Both are timed from this process, so machine noise hits both alike. Reported:
medians of wall time, convdiff/baseline ratio, convdiff's own overhead (its wall time minus
the framework work it measured: load, convert, infer), and per-phase time and peak memory.

    .venv/bin/python scripts/bench_run.py [--runs 3] [--models mobilenetv2,inceptionv3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONVDIFF = [sys.executable, "-m", "convdiff.cli"]
PHASES = ("startup", "prepare", "load", "convert", "infer", "compare")
FRAMEWORK_WORK = ("startup", "load", "convert", "infer")  # imports, loads, converter, inference


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds of the whole process tree (wait4 counts reaped descendants,
    so convdiff's workers are included), peak RSS (MB) of its largest member, stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT
    )
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def bench_model(model: str, runs: int, work: Path, env: dict[str, str]) -> dict:
    warm = work / f"{model}-warm"
    subprocess.run(
        [*CONVDIFF, "run", model, "--src", "tf", "--dst", "tflite", "--out", str(warm), "--quiet"],
        check=False,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    saved_model = next((warm / "artifacts" / "0-tf").iterdir())
    inputs = warm / "inputs" / "x.npz"
    spec = json.loads((warm / "report.json").read_text())["preprocessing"]
    size = ",".join(str(v) for v in spec["size"])
    baseline, convdiff, overhead, phases = [], [], [], {p: [] for p in PHASES}
    peaks = {p: [] for p in PHASES}
    baseline_peak = []
    baseline_cpu: list[float] = []
    convdiff_cpu: list[float] = []
    for i in range(runs):
        out = work / f"{model}-base-{i}"
        out.mkdir()
        wall, cpu, peak, stdout = timed(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_baseline_tf_tflite.py"),
                str(saved_model),
                str(inputs),
                str(out),
            ],
            env,
        )
        baseline.append(wall)
        baseline_cpu.append(cpu)
        baseline_peak.append(json.loads(stdout.strip().splitlines()[-1])["peak_rss_mb"])
        run_dir = work / f"{model}-convdiff-{i}"
        wall, cpu, _, _ = timed(
            [
                *CONVDIFF,
                "run",
                str(saved_model),
                "--dst",
                "tflite",
                "--preprocess",
                "inception",
                "--input-size",
                size,
                "--resize",
                spec["resize"],
                "--no-cache",
                "--quiet",
                "--out",
                str(run_dir),
            ],
            env,
        )
        report = json.loads((run_dir / "report.json").read_text())
        timings = report["timings"]
        framework_work = sum(
            timings.get(p, {}).get("work_seconds", 0.0) for p in ("load", "convert", "infer")
        )
        convdiff.append(wall)
        convdiff_cpu.append(cpu)
        overhead.append((wall - framework_work) / wall)
        for p in PHASES:
            phases[p].append(timings.get(p, {}).get("seconds", 0.0))
            peaks[p].append(timings.get(p, {}).get("peak_rss_mb", 0.0))
    med = statistics.median
    return {
        "model": model,
        "runs": runs,
        "baseline_wall_s": med(baseline),
        "convdiff_wall_s": med(convdiff),
        "ratio": med(convdiff) / med(baseline),
        "baseline_cpu_s": med(baseline_cpu),
        "convdiff_cpu_s": med(convdiff_cpu),
        "cpu_ratio": med(convdiff_cpu) / med(baseline_cpu),
        "overhead_share": med(overhead),
        "phase_wall_s": {p: med(v) for p, v in phases.items()},
        "phase_peak_mb": {p: max(v) for p, v in peaks.items()},
        "baseline_peak_mb": max(baseline_peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="mobilenetv2,inceptionv3")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = []
    with tempfile.TemporaryDirectory(prefix="convdiff-bench-") as tmp:
        for model in args.models.split(","):
            results.append(bench_model(model, args.runs, Path(tmp), env))
    print(
        "| model | baseline wall s | convdiff wall s | wall ratio | baseline CPU s | "
        "convdiff CPU s | CPU ratio | wall minus framework work | "
        + " | ".join(f"{p} s (peak MB)" for p in PHASES)
        + " |"
    )
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(PHASES))
    for r in results:
        cells = " | ".join(
            f"{r['phase_wall_s'][p]:.2f} ({r['phase_peak_mb'][p]:.0f})" for p in PHASES
        )
        print(
            f"| {r['model']} | {r['baseline_wall_s']:.1f} | {r['convdiff_wall_s']:.1f} | "
            f"{r['ratio']:.2f} | {r['baseline_cpu_s']:.1f} | {r['convdiff_cpu_s']:.1f} | "
            f"{r['cpu_ratio']:.2f} | {100 * r['overhead_share']:.1f}% | {cells} |"
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
