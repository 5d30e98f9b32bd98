"""`convdiff localize` on ONNX files quantized by onnxruntime: TVM imports the float twin
(convdiff.ir.onnx_quant), and the weights stage names exactly the quantized layers, as the file
names their ops (the ConvInteger, the QLinearConv, the Conv behind DequantizeLinear), with a
precision finding each -- and on the int32 biases of the static formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from convdiff.commands.localize.flow import LocalizeConfig, localize
from convdiff.core.progress import Progress
from convdiff.ir import onnx_quant
from convdiff.runtime.pool import WorkerPool
from tests.tiny.onnx_quant_models import MODES, quantize

pytestmark = pytest.mark.workers


@pytest.mark.parametrize("mode", MODES)
def test_precision_findings_name_exactly_the_quantized_layers(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path, mode: str
) -> None:
    target = quantize(tiny_onnx, tmp_path / f"{mode}.onnx", mode)
    quantized = onnx_quant.read(target).weights
    config = LocalizeConfig(str(tiny_onnx), str(target), out=tmp_path / "out")
    report = localize(config, Progress(enabled=False), pool)
    assert report.crashes == []
    # QDQ: the source's Relu and the Clip(0, top) the twin makes of the pair it was folded
    # into are not paired (two ops), and no finding: that range is the quantizer's doing
    pairs, unmatched = (5, 2) if mode == "qdq" else (6, 0)
    assert (report.alignment["pairs"], report.alignment["unmatched"]) == (pairs, unmatched)
    weights = [f for f in report.findings if f.stage == "weights"]
    params = ["weight"] if mode == "dynamic" else ["bias", "weight"]  # static: int32 biases
    assert sorted((f.target_layer, f.evidence["param"]) for f in weights) == sorted(
        (w.node, p) for w in quantized for p in params
    )
    assert {f.kind for f in weights} == {"precision"}
    assert [f.source_layer for f in weights if f.evidence["param"] == "weight"] == ["c", "logits"]
    by_layer = {f.target_layer: f for f in weights if f.evidence["param"] == "weight"}
    for w in quantized:
        finding = by_layer[w.node]
        assert finding.evidence["tensor"] == w.tensor
        assert finding.evidence["grid"] == "int8 in the target file (per-tensor scales)"
        assert finding.evidence["op"] == w.op_type
        assert finding.evidence["activations"] == w.activations
    assert not [f for f in report.findings if f.stage == "hyperparams"]
    assert report.imports["target"]["quant"]
    assert report.imports["target"]["notes"][0].startswith("quantized ONNX file: imported its")
    runtime = [f for f in report.findings if f.stage == "tools" and f.kind == "runtime"]
    assert all("float twin" in f.evidence["tvm_ran"] for f in runtime)


@pytest.mark.slow
def test_a_dynamically_quantized_timm_model_names_exactly_its_int8_layers(
    pool: WorkerPool, tmp_path: Path
) -> None:
    """timm mobilenetv3_small_100 (seeded random weights) -> ONNX (torch.onnx dynamo) ->
    quantize_dynamic: 53 ConvInteger + 1 MatMulInteger; the graph stages give one precision
    finding on each, named by its node, and nothing else (measured: 179 pairs, 7 s)."""
    from convdiff.commands.localize.flow import GRAPH_STAGES
    from convdiff.commands.run.flow import run
    from convdiff.commands.run.types import RunConfig

    model = "timm:mobilenetv3_small_100"
    ran = run(
        RunConfig(model=model, src="torch", dst="onnx", out=tmp_path / "run"),
        Progress(enabled=False),
    )
    assert ran.crashes == []
    source = Path(ran.chain[-1].artifact.path)
    target = quantize(source, tmp_path / "q.onnx", "dynamic")
    quantized = onnx_quant.read(target).weights
    assert [w.op_type for w in quantized].count("ConvInteger") == 53 and len(quantized) == 54
    config = LocalizeConfig(str(source), str(target), stages=GRAPH_STAGES, out=tmp_path / "loc")
    report = localize(config, Progress(enabled=False), pool)
    assert report.crashes == []
    assert report.alignment["pairs"] == 179 and report.alignment["unmatched"] == 0
    assert {(f.stage, f.kind, f.evidence["param"]) for f in report.findings} == {
        ("weights", "precision", "weight")
    }
    assert sorted(f.target_layer for f in report.findings) == sorted(w.node for w in quantized)
