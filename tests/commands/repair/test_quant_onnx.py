"""`convdiff repair` on ONNX files quantized by onnxruntime. A dynamic or QDQ file gets the
float fallback (convdiff.repair.fallback_onnx): its precision findings are not patched, the
fewest layers that bring the labels back run in float. A QOperator file (QLinearConv, QGemm:
no fallback for those ops) has its precision findings patched: float weights in the file, its
QLinear ops become float ops, and it comes back to the source's outputs up to its activations'
rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from convdiff.commands.localize.flow import LocalizeConfig
from convdiff.commands.repair.flow import RepairConfig, repair
from convdiff.core.progress import Progress
from convdiff.ir import onnx_quant
from convdiff.runtime.pool import WorkerPool
from tests.tiny.onnx_quant_models import MODES, quantize

pytestmark = pytest.mark.workers
IMAGES = np.random.default_rng(5).normal(0, 1, (4, 1, 3, 16, 16)).astype(np.float32)


def _run(path: Path) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x})[0] for x in IMAGES])


@pytest.mark.parametrize("mode", MODES)
def test_repair_of_a_quantized_file(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path, mode: str
) -> None:
    target = quantize(tiny_onnx, tmp_path / f"{mode}.onnx", mode)
    layers = sorted(w.node for w in onnx_quant.read(target).weights)
    fixed = tmp_path / "fixed.onnx"
    config = RepairConfig(LocalizeConfig(str(tiny_onnx), str(target)), fixed, tmp_path / "work")
    report = repair(config, Progress(enabled=False), pool)
    kept = sorted({e["layer"] for e in report.verify["kept"]})
    if mode == "dynamic":  # agrees on the 16 photos already: nothing falls back
        assert kept == [] and report.status == "nothing_to_repair" and not fixed.exists()
        assert (report.fallback["quantized_layers"], report.fallback["float_layers"]) == (2, 0)
        return
    if mode == "qdq":  # 1 of 16 photos disagrees: two of the five QDQ ops in float fix it
        assert kept == [] and report.status == "repaired"
        assert sorted(report.fallback["layers"]) == ["f", "logits"]
        assert (report.fallback["top1_before"], report.fallback["top1_after"]) == (6.25, 0.0)
        return
    assert report.fallback == {}
    assert kept == layers
    model = onnx.load(str(fixed))
    onnx.checker.check_model(model)
    assert not {n.op_type for n in model.graph.node} & set(onnx_quant.QUANT_OPS)
    diff = np.abs(_run(fixed) - _run(tiny_onnx)).max()
    assert 0 < diff < 0.01  # measured 2.1e-3: the activations' rounding


@pytest.mark.slow
def test_mobilenetv2_quantized_static_qdq_by_onnxruntime(pool: WorkerPool, tmp_path: Path) -> None:
    """The torch zoo's MobileNetV2 (seeded random weights) -> ONNX -> ``--ort-quant static-qdq``
    (calibrated on the run's images): localized as one precision finding per quantized weight
    and int32 bias, no other fault; the float fallback brings the top-1 discrepancy to 0 with
    part of the 64 quantized ops in float (measured: 62.5% -> 0% with 50; 4.0 -> 10.9 MB)."""
    from convdiff.commands.run.flow import run
    from convdiff.commands.run.types import RunConfig
    from convdiff.core.options import ConvertOptions

    ran = run(
        RunConfig(
            model="mobilenetv2",
            src="torch",
            dst="onnx",
            out=tmp_path / "run",
            convert=ConvertOptions(ort_quant="static-qdq"),
        ),
        Progress(enabled=False),
        pool=pool,
    )
    hop = ran.chain[-1]
    assert ran.crashes == [] and hop.converter == "ort-quantize"
    assert hop.agreement is not None and hop.agreement.top1_discrepancy > 0
    assert ran.source is not None and hop.artifact is not None
    target = Path(hop.artifact.path)
    quantized = onnx_quant.read(target).weights
    assert len(quantized) == 53  # 52 convs and the classifier
    localize = LocalizeConfig(ran.source.path, str(target), preprocess="imagenet")
    fixed = tmp_path / "fixed.onnx"
    report = repair(
        RepairConfig(localize, fixed, tmp_path / "repair"), Progress(enabled=False), pool
    )
    biases = sum(1 for w in quantized if w.bias is not None)  # int32: precision lost there too
    assert set(report.findings) == {"tools", "weights"}  # measured: 53 + 51 precision findings
    assert 53 < report.findings["weights"] <= 53 + biases
    fallback = report.fallback
    assert fallback["quantized_layers"] == 64 and fallback["top1_after"] == 0.0
    assert 0 < fallback["float_layers"] < 64 and report.status == "repaired"
    assert fallback["size_before"] < fallback["size_after"] == fixed.stat().st_size
