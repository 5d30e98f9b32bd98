"""One result convention: every command's report is a dataclass whose JSON reads back into the
same dataclasses (nested records, findings, typed follow-up summaries included)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from convdiff.commands.check.types import CheckResult, EntryResult
from convdiff.commands.localize.types import LocalizeReport
from convdiff.commands.repair.types import RepairReport
from convdiff.commands.run.types import (
    Artifact,
    Crash,
    Hop,
    LocalizationSummary,
    Phase,
    RepairSummary,
    RunReport,
)
from convdiff.commands.table.types import Cell, CellCrash, ModelBlock, TableReport
from convdiff.core.jsonio import JsonResult
from convdiff.metrics import Disagreement, PairMetrics
from convdiff.stages.findings import Finding

AGREEMENT = PairMetrics(4, 25.0, 25.0, 0.8, 0.5, 0.1, 50.0, 25.0, 2, (Disagreement("a", 1, 2),))


def test_run_report_round_trips_with_its_follow_ups() -> None:
    report = RunReport(
        model="m",
        src="keras",
        dst="tflite",
        source=Artifact("keras", "/m.keras", (None, 8, 8, 3), "NHWC"),
        chain=[
            Hop(
                1,
                "keras",
                "tflite",
                "TFLiteConverter",
                "2.21",
                {},
                Artifact("tflite", "/m"),
                1.5,
                AGREEMENT,
            ),
            Hop(
                2,
                "tflite",
                "onnx",
                "tf2onnx",
                "1.17",
                {"opset": None},
                crash=Crash("convert", "tf2onnx", "1.17", "boom", hop=2),
            ),
        ],  # fmt: skip
        timings={"infer": Phase(1.0, 0.5, 300.0)},
        localization=LocalizationSummary("/o/localize", "findings", {"weights": 1}, "top"),
        repair=RepairSummary("repaired", "/o/r.tflite", "/o/patch.json", {"a": 1}, {"a": 0}),
    )
    assert RunReport.from_json(report.to_json()) == report


def test_a_run_without_follow_ups_writes_them_as_empty_objects() -> None:
    data = json.loads(RunReport(model="m", src="keras", dst="tflite").to_json())
    assert (data["localization"], data["repair"], data["error"]) == ({}, {}, "")
    assert RunReport.from_dict(data).localization is None


def test_localize_report_round_trips() -> None:
    finding = Finding("weights", "precision", "conv", "conv", "int8", {"max_abs": 0.1}, "copy")
    report = LocalizeReport("s.onnx", "t.tflite", "onnx", "tflite", ["weights"], findings=[finding])
    back = LocalizeReport.from_json(report.to_json())
    assert back == report and back.faults == [finding]


def test_repair_table_and_check_reports_round_trip() -> None:
    repair = RepairReport("s", "t", "o", "/r", "repaired", findings={"weights": 2}, edits=["x"])
    assert RepairReport.from_json(repair.to_json()) == repair
    table = TableReport(
        ["keras", "tflite"],
        [ModelBlock("m", "m", "zoo", ("keras",), ("keras", "tflite"))],
        [Cell("m", "keras", "tflite", "crash", crash=CellCrash("convert", "t", "1", "why"))],
    )
    assert TableReport.from_json(table.to_json()) == table
    check = CheckResult("c.toml", "/o", entries=[EntryResult("e", "fail", "d", 1.0, "/o/e")])
    data = json.loads(check.to_json())
    assert (data["counts"]["fail"], data["exit_code"]) == (1, 1)
    assert CheckResult.from_dict(data) == check


def test_write_is_atomic_json_with_a_newline(tmp_path: Path) -> None:
    report = RunReport(model="m", src="keras", dst="tflite")
    report.write(tmp_path / "report.json")
    text = (tmp_path / "report.json").read_text()
    assert text.endswith("}\n") and json.loads(text)["model"] == "m"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_bytes_a_damaged_file_gave_as_a_name_are_written_as_text() -> None:
    @dataclasses.dataclass
    class Named(JsonResult):
        layer: object

    assert json.loads(Named(b"\x80onv_w").to_json()) == {"layer": "\ufffdonv_w"}
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        Named({1}).to_json()
