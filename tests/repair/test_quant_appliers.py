"""The ONNX applier on onnxruntime-quantized files: a weight/bias set on a ConvInteger /
MatMulInteger, QLinearConv / QGemm or a Conv behind DequantizeLinear makes the float op, the
file passes onnx.checker and runs in onnxruntime; with every quantized weight restored, a
dynamically quantized file computes the source exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from convdiff.ir import onnx_quant
from convdiff.repair.appliers import onnx as onnx_applier
from convdiff.repair.patch import Edit
from tests.tiny.onnx_quant_models import MODES, quantize

IMAGES = np.random.default_rng(11).normal(0, 1, (4, 1, 3, 16, 16)).astype(np.float32)


def _run(path: Path) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x})[0] for x in IMAGES])


@pytest.mark.parametrize("mode", MODES)
def test_restoring_the_float_weights_of_a_quantized_file(
    mode: str, tiny_onnx: Path, tmp_path: Path
) -> None:
    path = quantize(tiny_onnx, tmp_path / f"{mode}.onnx", mode)
    source = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tiny_onnx)).graph.initializer}
    conv, fc = (w.node for w in onnx_quant.read(path).weights)
    # the file's weights, read as the planner reads them: dequantized, in the file's layout
    stored_fc = onnx_applier.read_tensor(path, fc, "weight")
    assert stored_fc is not None
    fc_w = source["fc_w"] if stored_fc.shape == (10, 8) else source["fc_w"].T
    tensors = {"conv/w": source["conv_w"], "fc/w": fc_w}
    edits = [Edit("set_tensor", conv, "weight", "conv/w"), Edit("set_tensor", fc, "weight", "fc/w")]
    if mode != "dynamic":  # the int32 biases too
        tensors |= {"conv/b": source["conv_b"], "fc/b": source["fc_b"]}
        edits += [
            Edit("set_tensor", conv, "bias", "conv/b"),
            Edit("set_tensor", fc, "bias", "fc/b"),
        ]
    data, applied, refused = onnx_applier.apply(path, edits, tensors)
    assert refused == [] and len(applied) == len(edits)
    fixed = tmp_path / "fixed.onnx"
    fixed.write_bytes(data)
    model = onnx.load(str(fixed))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert not set(ops) & {"ConvInteger", "MatMulInteger", "QLinearConv", "QGemm"}
    named = {n.name: n.op_type for n in model.graph.node}
    assert named.get(conv) == "Conv" or mode == "qdq"  # QDQ: the Conv stays (unnamed: "r")
    for layer, field, want in ((conv, "weight", source["conv_w"]), (fc, "weight", fc_w)):
        assert np.array_equal(onnx_applier.read_tensor(fixed, layer, field), want)
    diff = np.abs(_run(fixed) - _run(tiny_onnx)).max()
    if mode == "dynamic":  # no activation quantization left: the source's function
        assert ops == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "MatMul", "Add", "Softmax"]
        assert diff == 0.0
    else:  # the activations stay quantized: the output is the source's to its rounding
        assert 0 < diff < 0.01
