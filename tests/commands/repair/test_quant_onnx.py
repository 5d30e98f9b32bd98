"""`convdiff repair` on ONNX files quantized by onnxruntime: the precision findings become
float weights in the file (the ConvInteger / QLinear ops become float ops); a dynamically
quantized file is then the source exactly, exit 0. A statically quantized one keeps its
activations' quantization (no finding asks for more), so it comes back to the source's outputs
only to that rounding."""

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
def test_repair_restores_the_float_weights(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path, mode: str
) -> None:
    target = quantize(tiny_onnx, tmp_path / f"{mode}.onnx", mode)
    layers = sorted(w.node for w in onnx_quant.read(target).weights)
    fixed = tmp_path / "fixed.onnx"
    config = RepairConfig(LocalizeConfig(str(tiny_onnx), str(target)), fixed, tmp_path / "work")
    report = repair(config, Progress(enabled=False), pool)
    kept = sorted({e["layer"] for e in report.verify["kept"]})
    assert kept == layers
    model = onnx.load(str(fixed))
    onnx.checker.check_model(model)
    assert not {n.op_type for n in model.graph.node} & set(onnx_quant.QUANT_OPS)
    diff = np.abs(_run(fixed) - _run(tiny_onnx)).max()
    if mode == "dynamic":
        assert report.exit_code == 0 and report.status == "repaired", report.notes
        assert diff == 0.0 and report.verify["after"]["max_abs_diff"] == 0.0
    else:  # measured 5.3e-3 (QDQ) and 2.1e-3 (QOperator): the activations' rounding
        assert 0 < diff < 0.01
