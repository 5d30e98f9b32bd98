"""What the benchmarks of localize and repair share: a warm-up conversion, and the timing of a
baseline command against a convdiff command, alternately, with the peak resident memory of
each one's whole process tree (the CLI and its workers, summed; sampled every 50 ms)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONVDIFF = [sys.executable, "-m", "convdiff.cli"]
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def tree_rss_mb(root: int) -> float:
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


def timed(
    cmd: list[str], env: dict[str, str], interval: float = 0.05, log: Path | None = None
) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the process tree (sampled every ``interval`` seconds),
    stdout. stderr goes to ``log`` when given (to see why a long run failed), else nowhere."""
    started = time.perf_counter()
    stderr = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env)
    finally:
        if log is not None:
            stderr.close()  # the child holds its own copy
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode not in (0, 1):  # localize: 1 = findings
        where = f" (stderr in {log})" if log is not None else ""
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}{where}")
    return wall, peak[0], out


def warm_keras_tflite(
    model: str, work: Path, env: dict[str, str], tflite_opt: str
) -> tuple[Path, str, str]:
    """One `convdiff run --src keras --dst tflite` before any timing (it fills the artifact
    cache): its folder, the Keras source and the .tflite target."""
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
    return warm, report["source"]["path"], report["chain"][0]["artifact"]["path"]


def alternate(
    runs: int,
    baseline: Callable[[int], list[str]],
    measured: Callable[[int], list[str]],
    env: dict[str, str],
) -> dict[str, list[float]]:
    """Run the ``baseline(i)`` and ``measured(i)`` commands in turn, ``runs`` times, so that
    machine noise hits both alike: their wall seconds and peak MB, run by run."""
    times: dict[str, list[float]] = {k: [] for k in ("base_wall", "base_peak", "wall", "peak")}
    for i in range(runs):
        for prefix, command in (("base_", baseline), ("", measured)):
            wall, peak, _ = timed(command(i), env)
            times[f"{prefix}wall"].append(wall)
            times[f"{prefix}peak"].append(peak)
    return times
