"""report.json is a stable interface: it round-trips and carries the keys scripts rely on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from convdiff.commands.run.types import SCHEMA_VERSION, Artifact, Crash, Hop, Phase, RunReport
from convdiff.metrics import compare

REQUIRED_KEYS = {
    "schema_version",
    "model",
    "src",
    "dst",
    "status",
    "chain",
    "images",
    "top1_discrepancy",
    "top5_discrepancy",
    "max_abs_diff",
    "crashes",
}


def _report() -> RunReport:
    agreement = compare(np.eye(3), np.eye(3)[[0, 2, 1]], ["a", "b", "c"], [(0,), (1,), ()])
    hop = Hop(
        1,
        "keras",
        "tflite",
        "TFLiteConverter",
        "tensorflow 2.21.0",
        {"tflite_opt": "none"},
        Artifact("tflite", "/runs/x/artifacts/1-tflite/model.tflite", (1, 8, 8, 3), "NHWC"),
        1.5,
        agreement,
    )
    crash = Crash("convert", "onnx2keras", "onnx2keras 0.0.25", "boom", "exception", 2, "log")
    return RunReport(
        model="tiny",
        src="keras",
        dst="tflite",
        status="crash",
        chain=[hop],
        crashes=[crash],
        timings={"convert": Phase(2.0, 1.5, 512.0)},
        route=["keras", "tflite"],
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    report = _report()
    report.write(tmp_path / "report.json")
    again = RunReport.from_json((tmp_path / "report.json").read_text())
    assert again == report
    assert again.chain[0].agreement.disagreeing[0].image == "b"
    assert again.chain[0].artifact.input_shape == (1, 8, 8, 3)


def test_stable_keys_and_no_temp_file_left(tmp_path: Path) -> None:
    _report().write(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data) >= REQUIRED_KEYS
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["crashes"][0] == {
        "stage": "convert",
        "tool": "onnx2keras",
        "version": "onnx2keras 0.0.25",
        "message": "boom",
        "failure": "exception",
        "hop": 2,
        "log": "log",
        "hint": "",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_exit_codes_follow_status() -> None:
    report = _report()
    codes = {}
    for status in ("ok", "discrepancy", "crash", "incomplete"):
        report.status = status
        codes[status] = report.exit_code
    assert codes == {"ok": 0, "discrepancy": 1, "crash": 3, "incomplete": 3}
