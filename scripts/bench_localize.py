"""Benchmark `convdiff localize` (weights, hyperparams, graph) against the bare TVM work.

For each model: one warm-up `convdiff run --src keras --dst tflite` builds the Keras model and
its TFLite conversion (cached). Then, alternately and ``--runs`` times, from this process:

- the baseline (this script with ``--baseline``): what any TVM-based comparison of the two
  files must do by hand, through the same worker pool -- the float route of the Keras source
  (tf2onnx, in a ``tf`` worker) and one TVM import + llvm compile + run on one image of each
  model (``convdiff.ir.tvm_import:run_tvm``, in a ``tvm`` worker);
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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONVDIFF = [sys.executable, "-m", "convdiff.cli"]
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, in MB."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(p for p, parent in parents.items() if parent == pid and p not in tree)
    total = 0.0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
        except (OSError, IndexError, ValueError):
            continue
    return total


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the process tree, stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode not in (0, 1):  # localize: 1 = findings
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, peak[0], out


def baseline(source: str, target: str, inputs: str, out: str) -> None:
    """The TVM work by hand: tf2onnx route of the source, import+compile+run of both files."""
    from convdiff.workers import WorkerPool

    work = Path(out)
    with WorkerPool(work / "logs") as pool:
        route = pool.call(
            "tf",
            "convdiff.tasks:convert",
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
                "convdiff.ir.tvm_import:run_tvm",
                framework=framework,
                path=path,
                inputs_npz=inputs,
                outputs_npz=str(work / f"y-{name}.npz"),
            )
            assert ran, ran.message


def bench_model(
    model: str, runs: int, work: Path, env: dict[str, str], stages: str, tflite_opt: str
) -> dict:
    warm = work / f"{model}-warm"
    subprocess.run(
        [*CONVDIFF, "run", model, "--src", "keras", "--dst", "tflite", "--out", str(warm)]
        + ["--tflite-opt", tflite_opt, "--quiet"],
        check=False,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    report = json.loads((warm / "report.json").read_text())
    source, target = report["source"]["path"], report["chain"][0]["artifact"]["path"]
    import numpy as np

    with np.load(warm / "inputs" / "x.npz") as data:
        one = work / f"{model}-x1.npz"
        np.savez(one, x=data["x"][:1])
    base_wall, base_peak, loc_wall, loc_peak, findings = [], [], [], [], []
    for i in range(runs):
        wall, peak, _ = timed(
            [sys.executable, __file__, "--baseline", source, target, str(one)]
            + [str(work / f"{model}-base-{i}")],
            env,
        )
        base_wall.append(wall)
        base_peak.append(peak)
        out = work / f"{model}-loc-{i}"
        wall, peak, _ = timed(
            [*CONVDIFF, "localize", source, target, "--stages", stages]
            + ["--out", str(out), "--quiet"],
            env,
        )
        loc_wall.append(wall)
        loc_peak.append(peak)
        findings.append(len(json.loads((out / "report.json").read_text())["findings"]))
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
