"""A run killed partway through its inference pass resumes at its first unfinished batch, and
its final report equals that of a run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
BATCH = 4
IMAGES = 240


def _folder(path: Path) -> Path:
    """Photos-sized noise JPEGs: slow enough to decode that the kill lands mid-pass."""
    rng = np.random.default_rng(7)
    path.mkdir()
    for i in range(IMAGES):
        pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path / f"img{i:04d}.jpg", quality=90)
    return path


def _command(model: Path, data: Path, out: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "convdiff",
        "run",
        str(model),
        "--dst",
        "torch",
        "--data",
        str(data),
        "--stream-batch",
        str(BATCH),
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--quiet",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _done(out: Path) -> int:
    try:
        return json.loads((out / "outputs" / "stream.json").read_text())["batches_done"]
    except (OSError, ValueError, KeyError):
        return 0


def _result(report: dict) -> dict:
    """What a run found, without what differs between two runs of it (times, folders)."""
    keep = (
        "status", "partial", "images", "top1_discrepancy", "top5_discrepancy",
        "kendall_tau_top5", "max_abs_diff", "mean_abs_diff", "disagreeing",
        "first_disagreeing_hop", "crashes", "data", "preprocessing", "route",
    )  # fmt: skip
    found = {k: report[k] for k in keep}
    found["agreements"] = [hop["agreement"] for hop in report["chain"]]
    return found


@pytest.mark.workers
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    data = _folder(tmp_path / "images")
    cache = tmp_path / "cache"
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = subprocess.run(_command(tiny_onnx, data, whole, cache), env=_env(), timeout=600)
    assert done.returncode == 0

    first = subprocess.Popen(
        _command(tiny_onnx, data, resumed, cache), env=_env(), start_new_session=True
    )
    deadline = time.monotonic() + 300
    while _done(resumed) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = _done(resumed)
    total = IMAGES // BATCH
    assert 3 <= killed_at < total, "the kill must land inside the pass"
    assert json.loads((resumed / "report.json").read_text())["partial"] is True

    again = subprocess.run(_command(tiny_onnx, data, resumed, cache), env=_env(), timeout=600)
    assert again.returncode == 0
    report = json.loads((resumed / "report.json").read_text())
    assert report["stream"]["resumed_at_batch"] == killed_at + 1
    assert report["stream"]["batches"] == total
    assert f"resumed at batch {killed_at + 1} of {total}" in " ".join(report["notes"])
    reference = json.loads((whole / "report.json").read_text())
    assert "resumed_at_batch" not in reference["stream"]
    assert _result(report) == _result(reference)
    assert report["images"] == IMAGES
    rows = np.load(resumed / "outputs" / "1-torch.npy")
    np.testing.assert_array_equal(rows, np.load(whole / "outputs" / "1-torch.npy"))
    assert not (resumed / "scratch").exists()

    # a finished pass in the same folder is read, not run again
    third = subprocess.run(_command(tiny_onnx, data, resumed, cache), env=_env(), timeout=600)
    assert third.returncode == 0
    report = json.loads((resumed / "report.json").read_text())
    assert report["stream"]["resumed_at_batch"] == total + 1
    assert f"all {total} batches were done by an earlier run" in " ".join(report["notes"])
    assert _result(report) == _result(reference)
