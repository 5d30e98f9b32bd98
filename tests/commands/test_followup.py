"""`convdiff run --localize`: the run's last artifact localized against its source.

Real conversions of tiny models: a faithful onnx2torch hop (no finding), a dynamic-range TFLite
conversion of a Keras model (the int8 weights are the finding), and a converter crash (nothing to
localize: the crash is the finding).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.followup import run
from convdiff.commands.run.types import RunConfig, RunReport
from convdiff.core.options import ConvertOptions
from convdiff.core.progress import Progress

ALL_STAGES = ["inputs", "tools", "weights", "hyperparams", "graph"]


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--quiet"])
    return result.exit_code, result.output


@pytest.mark.workers
def test_a_faithful_conversion_localizes_to_no_finding(base: Path, tmp_path: Path) -> None:
    code, out = _run(
        ["run", str(base), "--dst", "torch", "--preprocess", "imagenet", "--limit", "4"]
        + ["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--localize"]
    )
    assert code == 0, out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["localization"] == {
        "out_dir": str(tmp_path / "run" / "localize"),
        "status": "no_finding",
        "findings": {},
        "top": "",
        "error": "",
    }
    localized = json.loads((tmp_path / "run" / "localize" / "report.json").read_text())
    assert localized["stages"] == ALL_STAGES
    assert localized["target"] == report["chain"][0]["artifact"]["path"]
    # the localization fed the run's own preprocessing and images
    fed = localized["runs"]["inputs"]["source_spec"]
    assert fed["name"] == report["preprocessing"]["name"] == "imagenet+custom"
    assert fed["mean"] == report["preprocessing"]["mean"]
    assert localized["runs"]["inputs"]["same_tensors"]["images"] == 4
    assert localized["runs"]["tools"]["run_report"]["hops"][0]["tool"] == "onnx2torch"
    assert "localize: no finding\n" in out
    assert "## Localization" in (tmp_path / "run" / "report.md").read_text()


def _dynamic_range_run(keras_cnn_q: dict[str, str], tmp_path: Path, **options: object) -> RunReport:
    """A tiny Keras CNN (48 filters: its conv weights pass the converter's 1024-element minimum
    for int8) converted to TFLite with dynamic-range optimization."""
    config = RunConfig(
        model=keras_cnn_q["keras"],
        dst="tflite",
        convert=ConvertOptions(tflite_opt="dynamic-range"),
        preprocess="inception",
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        **options,
    )
    return run(config, Progress(enabled=False))


def test_dynamic_range_run_names_the_int8_layer(
    keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    report = _dynamic_range_run(keras_cnn_q, tmp_path, limit=4, localize=True)
    summary = report.localization
    assert (summary.status, summary.findings) == ("findings", {"weights": 1})
    assert summary.top.startswith("weights precision at conv -> ")
    written = json.loads((tmp_path / "run" / "report.json").read_text())
    assert written["localization"] == summary.__dict__
    assert written["status"] == report.status  # the verdict is the run's, not the localizer's


@pytest.mark.workers
def test_a_crashed_run_has_nothing_to_localize(reduce18_onnx: Path, tmp_path: Path) -> None:
    code, out = _run(
        ["run", str(reduce18_onnx), "--dst", "torch", "--limit", "2", "--no-cache"]
        + ["--out", str(tmp_path / "run"), "--localize"]
    )
    assert code == 3
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["localization"]["status"] == "skipped"
    assert report["localization"]["error"] == (
        "the run crashed in onnx2torch (convert): the crash is the finding"
    )
    assert "localize skipped: the run crashed in onnx2torch (convert)" in out
    assert not (tmp_path / "run" / "localize" / "report.json").exists()


def test_run_repair_brings_a_dynamic_range_tflite_back_to_float_level(
    keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    report = _dynamic_range_run(keras_cnn_q, tmp_path, repair=True)
    repaired = report.repair
    assert repaired.status == "repaired"
    assert repaired.before["max_abs_diff"] > 1e-4  # the int8 weights' doing
    assert repaired.after["top1_discrepancy"] == 0.0
    assert repaired.after["max_abs_diff"] < 1e-5  # a float conversion's level
    # TVM runs the target (tools stage), the source for its tensors at the anchors, and the
    # target's segments fed those (the function check)
    assert repaired.passes == {"native": 3, "tvm": 3}
    output = Path(repaired.output)
    assert output == tmp_path / "run" / "repair" / "model-repaired.tflite" and output.exists()
    patch = json.loads(Path(repaired.patch).read_text())
    assert [(e["action"], e["field"]) for e in patch["edits"]] == [("set_tensor", "weight")]
    assert "tiny_cnn_1/conv_1/convolution" in patch["edits"][0]["layer"]  # the op output
    assert report.localization.findings["weights"] == 1
    assert report.localization.out_dir == str(tmp_path / "run" / "repair" / "localize")
