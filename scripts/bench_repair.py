"""Benchmark `convdiff repair` (localize + plan + verify loop) on dynamic-range TFLite files.

For each model: one warm-up `convdiff run --src keras --dst tflite MODEL --tflite-opt
dynamic-range` builds the Keras model and its dynamic-range conversion (cached). Then,
alternately and ``--runs`` times, from this process:

- the baseline (this script with ``--baseline``): ONE full-dataset differential pass by hand --
  the Keras source and the .tflite target each loaded and run once on the sample images,
  through the same worker pool (framework imports included), as the research prototype did
  once per candidate edit;
- `convdiff repair SOURCE.keras TARGET.tflite -o FIXED.tflite --preprocess inception` (the
  Keras zoo models' own preprocessing, as the run fed them; all localization stages, the patch
  plan, the verify loop, the repaired file).

Both are timed the same way, so machine noise hits both alike. Reported: medians of wall time,
the repair's cost in baseline passes (wall ratio), the native inference passes over the image
set repair.json counts, the top-1 discrepancy and max |diff| before and after, and the peak
resident memory of the whole process tree (sampled every 50 ms; see bench_common.py).

    .venv/bin/python scripts/bench_repair.py [--runs 3] [--models mobilenetv2,inceptionv3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_common import CONVDIFF, ROOT, alternate, warm_keras_tflite


def baseline(source: str, target: str, inputs: str, out: str) -> None:
    """One differential pass by hand: both models loaded and run once on the images."""
    from convdiff.runtime.pool import WorkerPool

    work = Path(out)
    with WorkerPool(work / "logs") as pool:
        for kind, framework, path in (("tf", "keras", source), ("litert", "tflite", target)):
            ran = pool.call(
                kind,
                "convdiff.runtime.tasks:infer",
                framework=framework,
                path=path,
                inputs=inputs,
                outputs=str(work / f"y-{framework}.npz"),
            )
            assert ran, ran.message


def bench_model(model: str, runs: int, work: Path, env: dict[str, str]) -> dict:
    warm, source, target = warm_keras_tflite(model, work, env, "dynamic-range")
    inputs = str(warm / "inputs" / "x.npz")
    times = alternate(
        runs,
        lambda i: (
            [sys.executable, __file__, "--baseline", source, target, inputs]
            + [str(work / f"{model}-base-{i}")]
        ),
        lambda i: (
            [*CONVDIFF, "repair", source, target]
            + [
                "-o",
                str(work / f"{model}-repair-{i}" / "fixed.tflite"),
                "--preprocess",
                "inception",
            ]
            + ["--out", str(work / f"{model}-repair-{i}"), "--quiet"]
        ),
        env,
    )
    results = [
        json.loads((work / f"{model}-repair-{i}" / "repair.json").read_text()) for i in range(runs)
    ]
    base_wall, base_peak, rep_wall, rep_peak = (
        times[k] for k in ("base_wall", "base_peak", "wall", "peak")
    )
    med = statistics.median
    last = results[-1]
    return {
        "model": model,
        "runs": runs,
        "baseline_wall_s": med(base_wall),
        "repair_wall_s": med(rep_wall),
        "ratio": med(rep_wall) / med(base_wall),
        "baseline_peak_mb": med(base_peak),
        "repair_peak_mb": med(rep_peak),
        "native_passes": last["passes"]["native"],
        "tvm_runs": last["passes"]["tvm"],
        "status": [r["status"] for r in results],
        "before": last["verify"]["before"],
        "after": last["verify"]["after"],
        "edits": len(last["verify"]["kept"]),
        "all_wall_s": {"baseline": base_wall, "repair": rep_wall},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="mobilenetv2,inceptionv3")
    parser.add_argument("--baseline", nargs=4, metavar=("SOURCE", "TARGET", "X_NPZ", "OUT"))
    args = parser.parse_args()
    if args.baseline:
        baseline(*args.baseline)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = []
    with tempfile.TemporaryDirectory(prefix="convdiff-bench-repair-") as tmp:
        for model in args.models.split(","):
            results.append(bench_model(model, args.runs, Path(tmp), env))
    print(
        "| model | baseline pass s | repair s | in baseline passes | native passes | "
        "edits kept | top-1 before -> after | max diff before -> after | repair peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        b, a = r["before"], r["after"]
        print(
            f"| {r['model']} | {r['baseline_wall_s']:.1f} | {r['repair_wall_s']:.1f} | "
            f"{r['ratio']:.1f} | {r['native_passes']} | {r['edits']} | "
            f"{b['top1_discrepancy']:.4g}% -> {a['top1_discrepancy']:.4g}% | "
            f"{b['max_abs_diff']:.3g} -> {a['max_abs_diff']:.3g} | {r['repair_peak_mb']:.0f} |"
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
