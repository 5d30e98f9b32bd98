"""Quantized ONNX files read as they are (convdiff.ir.onnx_quant): the tiny ONNX classifier
quantized by onnxruntime (dynamic, static QDQ, static QOperator; per tensor and per channel).
The weights read are exactly the ops the quantizer quantized, their dequantized values lie
within half a step of the source's, and the float twin computes the float model on the
dequantized weights (to float rounding) -- and the quantized model up to its activations'
rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from convdiff.ir import onnx_quant
from convdiff.ir.names import FileOp, _onnx_ops, onnx_evidence
from tests.tiny.onnx_models import save_graph
from tests.tiny.onnx_quant_models import MODES, quantize, with_weights

# what onnxruntime 1.32 makes of tiny_classifier's Conv and Gemm: (file name, op) per mode
QUANTIZED = {
    "dynamic": [
        ("c_output_quantized", "ConvInteger", "dynamic"),
        ("logits_MatMul_output_quantized", "MatMulInteger", "dynamic"),
    ],
    "qdq": [("r", "Conv", "static"), ("logits", "Gemm", "static")],
    "qoperator": [
        ("c_quantized", "QLinearConv", "static"),
        ("logits_quantized", "QGemm", "static"),
    ],
}
IMAGES = np.random.default_rng(7).normal(0, 1, (6, 1, 3, 16, 16)).astype(np.float32)


def _run(path: Path) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x})[0] for x in IMAGES])


def _init(path: Path, name: str) -> np.ndarray:
    model = onnx.load(str(path))
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def _node(path: Path, reads: str) -> onnx.NodeProto:
    """The QuantizeLinear of tensor ``reads``."""
    model = onnx.load(str(path))
    return next(
        n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == reads
    )


def _relu_to_clip(path: Path, top: float) -> Path:
    """``path`` with its Relu replaced by Clip(0, top)."""
    model = onnx.load(str(path))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Clip"
    relu.input.extend(["clip_min", "clip_max"])
    for name, value in (("clip_min", 0.0), ("clip_max", top)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module", params=[(m, pc) for m in MODES for pc in (False, True)])
def quantized(request: pytest.FixtureRequest, tiny_onnx: Path, tmp_path_factory) -> tuple:
    mode, per_channel = request.param
    out = tmp_path_factory.mktemp(f"q-{mode}") / f"{mode}-{per_channel}.onnx"
    return mode, per_channel, quantize(tiny_onnx, out, mode, per_channel)


def test_the_weights_read_are_the_ops_the_quantizer_quantized(
    quantized: tuple, tiny_onnx: Path
) -> None:
    mode, per_channel, path = quantized
    report = onnx_quant.read(path)
    assert [(w.node, w.op_type, w.activations) for w in report.weights] == QUANTIZED[mode]
    assert {w.dtype for w in report.weights} == {"INT8"}
    model = onnx.load(str(path))
    for w in report.weights:  # the op sits where the report says
        assert onnx_quant.file_name(model.graph.node[w.index]) == w.node
    # within half a quantization step of the source's float weights
    conv, fc = report.weights
    assert conv.shape == [8, 3, 3, 3]
    src_fc = _init(tiny_onnx, "fc_w")  # [10, 8]; quantize_dynamic stores it transposed
    deq_fc = fc.dequantized() if fc.shape == [10, 8] else fc.dequantized().T
    for w, src, deq in (
        (conv, _init(tiny_onnx, "conv_w"), conv.dequantized()),
        (fc, src_fc, deq_fc),
    ):
        step = np.asarray(w.scales).max()
        assert np.abs(deq - src).max() <= step / 2 * (1 + 1e-5)
    # per-channel scales where onnxruntime writes them (its ConvInteger keeps one scale)
    if per_channel and mode != "dynamic":
        assert [len(w.scales) for w in report.weights] == [8, 10]
    elif per_channel:
        assert [len(w.scales) for w in report.weights] == [1, 10]
    else:
        assert [len(w.scales) for w in report.weights] == [1, 1]
    # int32 biases (static formats) are recorded, not counted as weights
    biases = [w.bias["dtype"] if w.bias else None for w in report.weights]
    assert biases == ([None, None] if mode == "dynamic" else ["INT32", "INT32"])


def test_the_float_twin_computes_the_float_model_on_the_dequantized_weights(
    quantized: tuple, tiny_onnx: Path, tmp_path: Path
) -> None:
    mode, per_channel, path = quantized
    twin = onnx_quant.float_twin(path, tmp_path / "twin.onnx")
    model = onnx.load(str(twin))
    onnx.checker.check_model(model)
    ops = [(n.op_type, n.name) for n in model.graph.node if n.op_type != "Identity"]
    conv, fc = (w.node for w in onnx_quant.read(path).weights)
    fc_op = {"dynamic": "MatMul", "qdq": "Gemm", "qoperator": "Gemm"}[mode]
    assert ("Conv", conv if mode != "qdq" else "") in ops and (
        fc_op,
        fc if mode != "qdq" else "",
    ) in ops
    assert not {op for op, _ in ops} & {"ConvInteger", "MatMulInteger", "QLinearConv", "QGemm"}
    # the Relu the static quantizer folded into the conv's output range is back: as a Relu
    # after the QLinearConv, as Clip(0, top of r's range) where the QDQ pair stood
    kinds = [op for op, _ in ops]
    assert (kinds.count("Relu"), kinds.count("Clip")) == ((0, 1) if mode == "qdq" else (1, 0))
    # reference: the float source with the dequantized weights (and int32 biases) put in
    report = onnx_quant.read(path)
    values = {}
    for w, name in zip(report.weights, ("conv", "fc"), strict=True):
        deq = w.dequantized()
        values[f"{name}_w"] = deq if name == "conv" or w.shape == [10, 8] else deq.T
        if w.bias is not None:
            q = _init(path, w.bias["tensor"]).astype(np.float64)
            values[f"{name}_b"] = q * np.asarray(w.bias["scales"])
    reference = with_weights(tiny_onnx, tmp_path / "reference.onnx", values)
    if mode == "qdq":  # the pair clamps r to its range, the twin's Clip too
        zero = _init(path, "r_zero_point")
        top = np.float32(_init(path, "r_scale")) * np.float32(
            int(np.iinfo(zero.dtype).max) - int(zero)
        )
        assert onnx_quant.folded_clamp(
            onnx_quant.Graph(onnx.load(str(path))), _node(path, "r")
        ) == (
            0.0,
            float(top),
        )
        reference = _relu_to_clip(reference, float(top))
    assert np.abs(_run(twin) - _run(reference)).max() < 1e-6
    # and the quantized model up to its activations' rounding: measured 4.0e-4 (dynamic: x
    # rounded to 1/255 of its range per image), 8.7e-3 / 4.6e-3 (QDQ / QOperator: the output
    # rounded to probs_scale = 1/255 and the logits to logits_scale = 0.047 before a softmax,
    # whose slope is at most 1/2)
    diff = np.abs(_run(twin) - _run(path)).max()
    if mode == "dynamic":
        assert diff < 1e-3
    else:
        assert diff < float(_init(path, "probs_scale")) + float(_init(path, "logits_scale")) / 2


def test_names_and_evidence_come_from_the_quantized_file(quantized: tuple) -> None:
    """The file's quantized ops name the layers of their float ops' kinds; the evidence is
    keyed by the layer that op names."""
    mode, _, path = quantized
    ops = [op for op in _onnx_ops(str(path)) if op.kind in ("conv2d", "dense")]
    conv, fc = QUANTIZED[mode]
    assert [(op.kind, op.name, op.size) for op in ops] == [
        ("conv2d", conv[0], 8 * 3 * 3 * 3),
        ("dense", fc[0], 8 * 10),
    ]
    evidence = onnx_evidence(str(path), {"conv2d_0": ops[0].index, "dense_0": ops[1].index})
    assert sorted(evidence) == ["conv2d_0", "dense_0"]
    assert evidence["conv2d_0"]["details"]["op"] == conv[1]
    assert evidence["conv2d_0"]["details"]["activations"] == conv[2]
    assert isinstance(ops[0], FileOp)


def test_a_tf2onnx_dequantized_weight_with_float_activations(tmp_path: Path) -> None:
    """tf2onnx's dynamic-range TFLite pattern: int8 per-channel weight -> DequantizeLinear ->
    Conv on a float input; read with its axis and "float" activations, twin exact."""
    rng = np.random.default_rng(3)
    q = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.01, 0.02, 4).astype(np.float32)
    weights = {"w_q": q, "w_scale": scale, "w_zero": np.zeros(4, np.int8)}
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["input", "w"], ["out"], "model/conv/Conv2D", pads=[1] * 4),
    ]
    path = save_graph(tmp_path / "tf.onnx", nodes, "tf", [1, 3, 8, 8], "out", [1, 4, 8, 8], weights)
    (w,) = onnx_quant.read(path).weights
    assert (w.node, w.op_type, w.tensor, w.axis, w.activations) == (
        "model/conv/Conv2D",
        "Conv",
        "w_q",
        0,
        "float",
    )
    assert w.scales == [float(s) for s in scale] and w.zero_points == [0] * 4
    twin = onnx.load(str(onnx_quant.float_twin(path, tmp_path / "twin.onnx")))
    assert [n.op_type for n in twin.graph.node] == ["Conv"]
    stored = numpy_helper.to_array(next(i for i in twin.graph.initializer if i.name == "w"))
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(
        stored, (q.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    )
    assert twin.graph.initializer[0].data_type == TensorProto.FLOAT
