"""Benchmark `convdiff localize` (weights, hyperparams, graph) against the bare TVM work.

For each model: one warm-up `convdiff run --src keras --dst tflite` builds the Keras model and
its TFLite conversion (cached). Then, alternately and ``--runs`` times, from this process:

- the baseline (this script with ``--baseline``): what any TVM-based comparison of the two
  files must do by hand, through the same worker pool -- the float route of the Keras source
  (tf2onnx, in a ``tf`` worker) and one TVM import + llvm compile + run on one image of each
  model (``convdiff.ir.tvm.tasks:run_tvm``, in a ``tvm`` worker);
- `convdiff localize SOURCE.keras TARGET.tflite --stages weights,hyperparams,graph` (the same
  route conversion and two TVM imports, then canonicalization, alignment and the stages; no
  compile, no run), or with ``--stages all`` the default localization (also both models on
  their own runtimes over the sample images, and one TVM compile per model run on at most 4
  images, with the activations of the disagreeing ones).

Both are timed the same way, so machine noise hits both alike. Reported: medians of wall time
and their ratio, and the peak resident memory of the whole process tree (the CLI and its
workers, summed; sampled from /proc every 50 ms).

    .venv/bin/python scripts/bench_localize.py [--runs 3] [--models mobilenetv2,inceptionv3]
        [--stages weights,hyperparams,graph | all] [--tflite-opt none | dynamic-range]
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
    """The TVM work by hand: tf2onnx route of the source, import+compile+run of both files."""
    from convdiff.runtime.client import TVM
    from convdiff.runtime.pool import WorkerPool

    work = Path(out)
    with WorkerPool(work / "logs") as pool:
        route = pool.call(
            "tf",
            "convdiff.runtime.tasks:convert",
            src="keras",
            dst="onnx",
            src_path=source,
            out_dir=str(work / "route"),
            options={},
        )
        assert route, route.message
        for name, framework, path in (
            ("source", "onnx", route.value["path"]),
            ("target", "tflite", target),
        ):
            ran = pool.call(
                "tvm",
                f"{TVM}:run_tvm",
                framework=framework,
                path=path,
                inputs_npz=inputs,
                outputs_npz=str(work / f"y-{name}.npz"),
            )
            assert ran, ran.message


def bench_model(
    model: str, runs: int, work: Path, env: dict[str, str], stages: str, tflite_opt: str
) -> dict:
    warm, source, target = warm_keras_tflite(model, work, env, tflite_opt)
    import numpy as np

    with np.load(warm / "inputs" / "x.npz") as data:
        one = work / f"{model}-x1.npz"
        np.savez(one, x=data["x"][:1])
    times = alternate(
        runs,
        lambda i: (
            [sys.executable, __file__, "--baseline", source, target, str(one)]
            + [str(work / f"{model}-base-{i}")]
        ),
        lambda i: (
            [*CONVDIFF, "localize", source, target, "--stages", stages]
            + ["--out", str(work / f"{model}-loc-{i}"), "--quiet"]
        ),
        env,
    )
    findings = [
        len(json.loads((work / f"{model}-loc-{i}" / "report.json").read_text())["findings"])
        for i in range(runs)
    ]
    base_wall, base_peak, loc_wall, loc_peak = (
        times[k] for k in ("base_wall", "base_peak", "wall", "peak")
    )
    med = statistics.median
    return {
        "model": model,
        "stages": stages,
        "tflite_opt": tflite_opt,
        "runs": runs,
        "baseline_wall_s": med(base_wall),
        "localize_wall_s": med(loc_wall),
        "ratio": med(loc_wall) / med(base_wall),
        "baseline_peak_mb": med(base_peak),
        "localize_peak_mb": med(loc_peak),
        "peak_ratio": med(loc_peak) / med(base_peak),
        "findings": findings,
        "all_wall_s": {"baseline": base_wall, "localize": loc_wall},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="mobilenetv2,inceptionv3")
    parser.add_argument("--stages", default="weights,hyperparams,graph")
    parser.add_argument("--tflite-opt", default="none", choices=["none", "dynamic-range"])
    parser.add_argument("--baseline", nargs=4, metavar=("SOURCE", "TARGET", "X_NPZ", "OUT"))
    args = parser.parse_args()
    if args.baseline:
        baseline(*args.baseline)
        return
    stages = "inputs,tools,weights,hyperparams,graph" if args.stages == "all" else args.stages
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = []
    with tempfile.TemporaryDirectory(prefix="convdiff-bench-localize-") as tmp:
        for model in args.models.split(","):
            results.append(bench_model(model, args.runs, Path(tmp), env, stages, args.tflite_opt))
    print(
        "| model | baseline wall s | localize wall s | wall ratio | baseline peak MB | "
        "localize peak MB | peak ratio | findings |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['baseline_wall_s']:.1f} | {r['localize_wall_s']:.1f} | "
            f"{r['ratio']:.2f} | {r['baseline_peak_mb']:.0f} | {r['localize_peak_mb']:.0f} | "
            f"{r['peak_ratio']:.2f} | {', '.join(map(str, r['findings']))} |"
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
