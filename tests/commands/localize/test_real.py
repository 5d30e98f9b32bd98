"""`convdiff localize` on real conversions of real architectures (slow).

The graph stages (weights, hyperparams, graph) must stay silent on a clean float conversion
and, on a dynamic-range TFLite file, name exactly the weights the converter stored as int8.
Zoo models with seeded BatchNorm-calibrated random weights (ImageNet weights are downloads);
conversions go through one module-wide artifact cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convdiff.commands.localize.flow import GRAPH_STAGES, LocalizeConfig, LocalizeReport, localize
from convdiff.commands.run.flow import run
from convdiff.commands.run.types import RunConfig
from convdiff.core.options import ConvertOptions
from convdiff.core.progress import Progress
from convdiff.ir import tflite_quant
from convdiff.runtime.pool import WorkerPool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifact-cache")


def _convert(out: Path, cache: Path, model: str, src: str, dst: str, **kw: object) -> list[str]:
    """The source file and every artifact of the chain, in order."""
    report = run(
        RunConfig(model=model, src=src, dst=dst, out=out, cache_dir=cache, **kw),
        Progress(enabled=False),
    )
    assert report.crashes == [], report.crashes
    return [report.source.path] + [h.artifact.path for h in report.chain]


def _localize(pool: WorkerPool, source: str, target: str, out: Path) -> LocalizeReport:
    config = LocalizeConfig(source, target, stages=GRAPH_STAGES, out=out)
    report = localize(config, Progress(enabled=False), pool)
    assert report.crashes == []
    return report


def _by_stage(report: LocalizeReport) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in report.findings:
        found.setdefault(f.stage, []).append(f.kind)
    return found


def test_mobilenetv2_keras_to_tflite_float_has_no_finding(
    pool: WorkerPool, tmp_path: Path, cache: Path
) -> None:
    # tf2onnx writes Keras' ZeroPadding2D as ONNX Pad: it must fold into the stride-2
    # depthwise convs as TFLite's PAD does (was 4 asymmetric_pads + 4 missing_layer)
    source, target = _convert(tmp_path / "run", cache, "mobilenetv2", "keras", "tflite")
    report = _localize(pool, source, target, tmp_path / "loc")
    assert _by_stage(report) == {}
    assert report.alignment["pairs"] == 101 and report.alignment["unmatched"] == 0
    assert report.imports["source"]["route"] == "keras -> onnx (tf2onnx)"


def test_mobilenetv2_torch_to_onnx_folds_all_52_batch_norms(
    pool: WorkerPool, tmp_path: Path, cache: Path
) -> None:
    # torch keeps 52 BatchNorms, its ONNX export folds them into conv biases: canonicalization
    # once stopped after 50 folds (2 scale + 2 missing_layer + 2 extra_layer findings)
    source, target = _convert(tmp_path / "run", cache, "mobilenetv2", "torch", "onnx")
    report = _localize(pool, source, target, tmp_path / "loc")
    assert _by_stage(report) == {}
    assert report.alignment["pairs"] == 100 and report.alignment["unmatched"] == 0


def test_inceptionv3_dynamic_range_names_exactly_the_int8_weights(
    pool: WorkerPool, tmp_path: Path, cache: Path
) -> None:
    options = ConvertOptions(tflite_opt="dynamic-range")
    source, target = _convert(
        tmp_path / "run", cache, "inceptionv3", "keras", "tflite", convert=options
    )
    # tf2onnx merges InceptionV3's nested concats (mixed9, mixed10), TFLite keeps them: the
    # canonical graphs must still align everywhere (was 52 unmatched, 24 reordered)
    report = _localize(pool, source, target, tmp_path / "loc")
    assert report.alignment["pairs"] == 216 and report.alignment["unmatched"] == 0
    int8 = {t.name for t in tflite_quant.read(target).quantized}
    # 93 of the 94 convolutions and the classifier: the first conv (3x3x3x32 = 864 weights) is
    # under the converter's 1024-element minimum and stays float, so it must not be reported
    assert len(int8) == 94
    assert set(_by_stage(report)) == {"weights"}
    weights = report.findings
    assert {(f.kind, f.evidence["param"]) for f in weights} == {("precision", "weight")}
    assert sorted(f.evidence["tensor"] for f in weights) == sorted(int8)
    assert report.imports["target"]["refused"]  # TVM refused the int8 file: its float twin


def test_inceptionv3_onnx_to_torch_imports_and_has_no_finding(
    pool: WorkerPool, tmp_path: Path, cache: Path
) -> None:
    # onnx2torch writes the constant Gathers of torchvision's transform_input as aten.item of
    # a buffer feeding select, which TVM's torch frontend refused (exit 2); folded first now
    options = ConvertOptions(torch_exporter="torchscript", opset=17)
    _, onnx_file, pt2 = _convert(
        tmp_path / "run", cache, "inceptionv3", "torch", "torch", via=("onnx",), convert=options
    )
    report = _localize(pool, onnx_file, pt2, tmp_path / "loc")
    assert report.error == "" and _by_stage(report) == {}
    assert report.alignment["pairs"] == 225 and report.alignment["unmatched"] == 0
    assert report.imports["target"]["notes"] == [
        "3 aten.item of a constant buffer folded to its value for TVM"
    ]
