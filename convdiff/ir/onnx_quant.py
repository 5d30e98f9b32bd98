"""Quantized weights read straight from an ONNX file, and its float twin.

onnxruntime's quantizer writes three kinds of graphs, and tf2onnx a fourth:

- dynamic (``quantize_dynamic``): ``ConvInteger`` / ``MatMulInteger`` on int8 weights, fed by
  ``DynamicQuantizeLinear`` of the float activation, followed by ``Cast -> Mul(x_scale *
  w_scale) [-> Add(bias)]``;
- QDQ (``quantize_static``, ``QuantFormat.QDQ``): float ``Conv`` / ``Gemm`` / ``MatMul`` whose
  weight is ``DequantizeLinear`` of an integer initializer, and ``QuantizeLinear ->
  DequantizeLinear`` pairs on the activations;
- QOperator (``QuantFormat.QOperator``): ``QLinearConv``, ``QLinearMatMul``, ``QGemm`` and
  ``QLinear*`` activations (com.microsoft) on integer tensors;
- tf2onnx of a dynamic-range TFLite file: ``DequantizeLinear`` weights, float activations.

TVM 0.27 refuses ``ConvInteger``, and imports QDQ pairs as quantize/dequantize ops that the
float source has not. :func:`read` lists every quantized weight (the integers, scales, zero
points, dtype, the op that computes with it, and whether its activations are quantized);
:func:`float_twin` writes the same model in float: each quantized op is its float op with the
dequantized weight as a float32 initializer, named as the file names the quantized op, and the
activations' quantization is dropped -- except where the quantizer removed an activation
after a Conv/Gemm/MatMul/Add and folded it into the output's quantization range, whose lower
end is then exactly 0: a QDQ pair becomes ``Clip(0, top of its range)`` (:func:`folded_clamp`:
what the pair computes, rounding aside, whether the source had a ReLU or a ReLU6), a QLinear
op's output a ``Relu``. The canonical graph imported from the twin carries
exactly the weights the quantized model computes with; the integers stay as evidence
(:meth:`QuantReport.save`). The node rewrites are shared with the ONNX repair applier
(:func:`float_op`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convdiff.ir.tflite_quant import dequantize

# quantized op -> (float op, weight input, weight scale input, weight zero point input)
# ConvInteger / MatMulInteger carry no weight scale: it is in the Mul that follows them
QUANT_OPS: dict[str, tuple[str, int, int | None, int]] = {
    "ConvInteger": ("Conv", 1, None, 3),
    "MatMulInteger": ("MatMul", 1, None, 3),
    "QLinearConv": ("Conv", 3, 4, 5),
    "QLinearMatMul": ("MatMul", 3, 4, 5),
    "QGemm": ("Gemm", 3, 4, 5),
}
FLOAT_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")  # a Relu after these may be folded
PASS_THROUGH = ("Identity", "Transpose", "Reshape", "Cast", "Unsqueeze", "Squeeze")
# QLinear activation op (com.microsoft) -> (float op, data inputs, output zero point input)
QLINEAR_ACTIVATIONS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "QLinearAdd": ("Add", (0, 3), 7),
    "QLinearMul": ("Mul", (0, 3), 7),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), 4),
    "QLinearAveragePool": ("AveragePool", (0,), 4),
    "QLinearSoftmax": ("Softmax", (0,), 4),
    "QLinearSigmoid": ("Sigmoid", (0,), 4),
    "QLinearLeakyRelu": ("LeakyRelu", (0,), 4),
}
_DROPPED_ATTRS = ("channels_last", "opset")  # QLinear attributes their float op has not


@dataclass
class QuantWeight:
    """One weight stored as integers, and the op of the file that computes with it."""

    node: str  # the op's name as the file gives it (its first output when unnamed)
    index: int  # the op's position in the file's node list
    op_type: str  # ConvInteger, QLinearConv, Conv (its weight behind a DequantizeLinear), ...
    tensor: str  # the integer initializer
    dtype: str  # ONNX element type name: INT8, UINT8, INT16, ...
    shape: list[int]
    scales: list[float]
    zero_points: list[int]
    axis: int  # the axis the scales run along when there are several
    activations: str  # "dynamic" (DynamicQuantizeLinear), "static" (fixed scale) or "float"
    values: np.ndarray | None = field(default=None, repr=False)
    bias: dict[str, Any] | None = None  # an int32 bias: {"tensor", "dtype", "scales"}

    def dequantized(self) -> np.ndarray:
        """``(q - zero_point) * scale`` in float32, per channel along ``axis``."""
        assert self.values is not None
        return dequantize(self.values, self.scales, self.zero_points, self.axis)


@dataclass
class QuantReport:
    """Every quantized weight of an ONNX file (main graph)."""

    path: str
    weights: list[QuantWeight]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "weights": [
                {k: v for k, v in w.__dict__.items() if k != "values"} for w in self.weights
            ],
        }

    def save(self, npz_path: Path) -> Path:
        """Integers, scales, zero points and dequantized values, keyed ``<tensor>/...``; the
        rest (ops, dtypes, activations) as JSON beside it (``quant.json``)."""
        arrays: dict[str, np.ndarray] = {}
        for w in self.weights:
            assert w.values is not None
            arrays[f"{w.tensor}/q"] = w.values
            arrays[f"{w.tensor}/scale"] = np.asarray(w.scales, dtype=np.float32)
            arrays[f"{w.tensor}/zero_point"] = np.asarray(w.zero_points, dtype=np.int64)
            arrays[f"{w.tensor}/float"] = w.dequantized()
        np.savez(npz_path, **arrays)
        Path(npz_path).with_suffix(".json").write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return Path(npz_path)


# -- reading --------------------------------------------------------------------------------


class Graph:
    """Lookups on one graph: producers, readers, constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.inits = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def const(self, name: str) -> np.ndarray | None:
        """An initializer's or Constant's value (through Reshape of constants), else None."""
        if not name:
            return None
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            return None if attr is None else numpy_helper.to_array(attr.t)
        if node.op_type == "Reshape":
            data, shape = self.const(node.input[0]), self.const(node.input[1])
            return None if data is None or shape is None else data.reshape(shape)
        return None

    def only_reader(self, name: str, op_type: str) -> onnx.NodeProto | None:
        readers = self.readers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == op_type and name not in self.outputs:
            return readers[0]
        return None


def file_name(node: onnx.NodeProto) -> str:
    """What :mod:`convdiff.ir.names` calls an ONNX node: its name, or its first output."""
    return node.name or node.output[0]


def read(path: str | Path) -> QuantReport:
    """List the quantized weights of an ONNX file, with values and the ops that use them."""
    model = onnx.load(str(path))
    g = Graph(model)
    weights = []
    for index, node in enumerate(model.graph.node):
        if node.op_type in QUANT_OPS:
            found = _quant_op_weight(g, node, index)
        elif node.op_type in FLOAT_WEIGHTED:
            found = _qdq_weight(g, node, index)
        else:
            found = None
        if found is not None:
            weights.append(found)
    return QuantReport(str(path), weights)


def _int_dtype(array: np.ndarray) -> str | None:
    """The ONNX type name of an integer weight (int32 biases are not weights)."""
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 2:
        return None
    return onnx.TensorProto.DataType.Name(helper.np_dtype_to_tensor_dtype(array.dtype))


def _quant_op_weight(g: Graph, node: onnx.NodeProto, index: int) -> QuantWeight | None:
    _, w_in, scale_in, zp_in = QUANT_OPS[node.op_type]
    q = g.const(node.input[w_in])
    if q is None or _int_dtype(q) is None:
        return None
    if scale_in is None:  # ConvInteger / MatMulInteger: the scale is in the Mul chain
        chain = _integer_chain(g, node)
        scale = None if chain is None else chain[2]
        activations = "dynamic" if _is_dynamic(g, node.input[0]) else "static"
    else:
        scale, activations = g.const(node.input[scale_in]), "static"
    if scale is None:
        return None
    zp_name = node.input[zp_in] if len(node.input) > zp_in else ""
    zero = g.const(zp_name)
    zero = np.zeros(1, np.int64) if zero is None else zero
    bias = None
    bias_in = {"QLinearConv": 8, "QGemm": 6}.get(node.op_type, 0)
    x_scale = g.const(node.input[1]) if bias_in else None
    if bias_in and len(node.input) > bias_in and node.input[bias_in] and x_scale is not None:
        steps = float(np.ravel(x_scale)[0]) * np.ravel(scale).astype(np.float64)
        bias = {"tensor": node.input[bias_in], "dtype": "INT32", "scales": steps.tolist()}
    return QuantWeight(
        file_name(node),
        index,
        node.op_type,
        node.input[w_in],
        str(_int_dtype(q)),
        list(q.shape),
        [float(s) for s in np.ravel(scale)],
        [int(z) for z in np.ravel(zero)],
        _weight_axis(node, q),
        activations,
        q,
        bias,
    )


def _weight_axis(node: onnx.NodeProto, q: np.ndarray) -> int:
    """The output-channel axis of a weight: 0 for a conv's OIHW, a MatMul's last ([K, N]),
    a Gemm's 0 with transB, else 1."""
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        return 0
    if node.op_type in ("Gemm", "QGemm"):
        return 0 if _attr(node, "transB", 0) else 1
    return q.ndim - 1


def _qdq_weight(g: Graph, node: onnx.NodeProto, index: int) -> QuantWeight | None:
    """A float op whose weight input is DequantizeLinear of an integer constant (through
    pass-through ops such as tf2onnx's Transpose)."""
    slot = 1 if len(node.input) > 1 else None
    if slot is None:
        return None
    dq = _weight_dq(g, node.input[slot])
    if dq is None and node.op_type == "MatMul":  # a constant left operand
        dq = _weight_dq(g, node.input[0])
    if dq is None:
        return None
    q = g.const(dq.input[0])
    scale = g.const(dq.input[1])
    if q is None or scale is None or _int_dtype(q) is None:
        return None
    zero = g.const(dq.input[2]) if len(dq.input) > 2 else None
    zero = np.zeros(1, np.int64) if zero is None else zero
    data_in = g.producer.get(node.input[0])
    static = data_in is not None and data_in.op_type == "DequantizeLinear"
    return QuantWeight(
        file_name(node),
        index,
        node.op_type,
        dq.input[0],
        str(_int_dtype(q)),
        list(q.shape),
        [float(s) for s in np.ravel(scale)],
        [int(z) for z in np.ravel(zero)],
        int(_attr(dq, "axis", 1)) % max(q.ndim, 1),
        "static" if static and g.const(data_in.input[0]) is None else "float",
        q,
        _dq_bias(g, node),
    )


def _dq_bias(g: Graph, node: onnx.NodeProto) -> dict[str, Any] | None:
    """A Conv's / Gemm's bias that is DequantizeLinear of an int32 constant (QDQ models)."""
    if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
        return None
    dq = g.producer.get(node.input[2])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q, scale = g.const(dq.input[0]), g.const(dq.input[1])
    if q is None or scale is None:
        return None
    dtype = onnx.TensorProto.DataType.Name(helper.np_dtype_to_tensor_dtype(q.dtype))
    return {"tensor": dq.input[0], "dtype": dtype, "scales": np.ravel(scale).tolist()}


def _weight_dq(g: Graph, name: str) -> onnx.NodeProto | None:
    node = g.producer.get(name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear" or g.const(node.input[0]) is None:
        return None
    return node


def _is_dynamic(g: Graph, name: str) -> bool:
    node = g.producer.get(name)
    return node is not None and node.op_type == "DynamicQuantizeLinear"


def _integer_chain(
    g: Graph, node: onnx.NodeProto
) -> tuple[list[onnx.NodeProto], str, np.ndarray] | None:
    """``ConvInteger -> Cast -> Mul(s)`` with ``s = x_scale * w_scale``: the nodes after the
    integer op, the tensor the chain ends in, and the weight's scale (the constant factor)."""
    cast = g.only_reader(node.output[0], "Cast")
    mul = g.only_reader(cast.output[0], "Mul") if cast is not None else None
    if mul is None:
        return None
    factor = next(i for i in mul.input if i != cast.output[0])
    scale = g.const(factor)
    if scale is None:  # s = Mul(x_scale, w_scale): the constant one is the weight's
        product = g.producer.get(factor)
        if product is None or product.op_type != "Mul":
            return None
        scale = next((g.const(i) for i in product.input if g.const(i) is not None), None)
    if scale is None:
        return None
    return [cast, mul], mul.output[0], scale


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    attr = next((a for a in node.attribute if a.name == name), None)
    return default if attr is None else helper.get_attribute_value(attr)


# -- the float twin -------------------------------------------------------------------------


def has_quantized_ops(model: onnx.ModelProto) -> bool:
    """Whether the file quantizes anything: integer ops, QLinear ops or Q/DQ nodes."""
    kinds = {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear"}
    kinds |= set(QUANT_OPS) | set(QLINEAR_ACTIVATIONS) | {"QLinearConcat"}
    return any(n.op_type in kinds for n in model.graph.node)


def float_twin(path: str | Path, out_path: str | Path) -> Path:
    """Write ``path`` in float (module docstring): quantized ops -> their float ops with
    dequantized float32 weights (same names), activation quantization -> Identity, or Relu
    where a folded Relu must come back."""
    model = onnx.load(str(path))
    g = Graph(model)
    nodes: list[onnx.NodeProto] = []
    dropped: set[tuple[str, ...]] = set()  # chain nodes already expressed by a float op
    inits: list[onnx.TensorProto] = []
    for node in model.graph.node:
        if tuple(node.output) in dropped:
            continue
        made, gone, consts = _twin_nodes(g, node)
        nodes += made
        inits += consts
        dropped |= {tuple(n.output) for n in gone}
    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.value_info[:]
    for out in graph.output:  # a fully integer graph ends in float now
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    _prune_dead(model)
    onnx.checker.check_model(model)
    out = Path(out_path)
    onnx.save(model, str(out))
    return out


def _twin_nodes(
    g: Graph, node: onnx.NodeProto
) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The float nodes for one file node, the later nodes they also replace, new constants."""
    op = node.op_type
    if op == "DequantizeLinear" and g.const(node.input[0]) is not None:  # a weight or bias
        value = _dq_value(g, node)
        return [], [], [numpy_helper.from_array(value, node.output[0])]
    if op == "DequantizeLinear" or op == "DynamicQuantizeLinear":
        return [helper.make_node("Identity", [node.input[0]], [node.output[0]], node.name)], [], []
    if op == "QuantizeLinear":
        clamp = folded_clamp(g, node)
        if clamp is None:
            return (
                [helper.make_node("Identity", [node.input[0]], [node.output[0]], node.name)],
                [],
                [],
            )
        return clip_node(node.input[0], node.output[0], node.name, clamp)
    if op in QUANT_OPS:
        made, gone, consts = float_op(g, node, "twin")
        return made, gone, consts
    if op in QLINEAR_ACTIVATIONS:
        float_kind, data, zp_in = QLINEAR_ACTIVATIONS[op]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v for k, v in attrs.items() if k not in _DROPPED_ATTRS}
        if _attr(node, "channels_last", 0):
            raise ValueError(f"{op} {file_name(node)!r} with channels_last is not read")
        inputs = [node.input[i] for i in data]
        relu = float_kind == "Add" and _zero_floor(g, node.input[zp_in])
        return _with_relu(float_kind, inputs, node, attrs, relu), [], []
    if op == "QLinearConcat":  # (Y_scale, Y_zp, then X, scale, zp per input)
        axis = _attr(node, "axis", 1)
        concat = helper.make_node("Concat", list(node.input[2::3]), [node.output[0]], node.name)
        concat.attribute.append(helper.make_attribute("axis", axis))
        return [concat], [], []
    return [node], [], []


def float_op(
    g: Graph, node: onnx.NodeProto, mode: str
) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A quantized op as its float op on the dequantized weight (named as the file names the
    op), the nodes after it that it also replaces, and its new float32 constants.

    ``mode`` "twin": the float op reads and writes float tensors (activation quantization is
    dropped everywhere). ``mode`` "repair": its neighbours stay quantized, so a QLinear op
    becomes ``DequantizeLinear -> float op -> QuantizeLinear`` on the same scales, and an
    integer op reads the float tensor its DynamicQuantizeLinear quantized."""
    float_kind, w_in, scale_in, zp_in = QUANT_OPS[node.op_type]
    name = file_name(node)
    weight = _quant_op_weight(g, node, 0)
    if weight is None:
        raise ValueError(f"{node.op_type} {name!r}: its weight is not a quantized constant")
    w_name = f"{name}.weight"
    consts = [numpy_helper.from_array(weight.dequantized(), w_name)]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: v for k, v in attrs.items() if k not in _DROPPED_ATTRS}
    if scale_in is None:  # ConvInteger / MatMulInteger and their Cast -> Mul
        chain = _integer_chain(g, node)
        assert chain is not None  # _quant_op_weight found it
        gone, end, _ = chain
        x = node.input[0]
        source = g.producer.get(x)
        if source is not None and source.op_type in ("DynamicQuantizeLinear", "QuantizeLinear"):
            x = source.input[0]
        inputs = [x, w_name]
        add = g.only_reader(end, "Add")
        bias = _bias_of(g, add, end) if add is not None and float_kind == "Conv" else None
        if bias is not None:  # the Conv's own bias, as the float model has it
            consts.append(numpy_helper.from_array(bias, f"{name}.bias"))
            inputs.append(f"{name}.bias")
            gone, end = [*gone, add], add.output[0]
        return [helper.make_node(float_kind, inputs, [end], name, **attrs)], gone, consts
    x_in, x_scale, x_zp = node.input[0], node.input[1], node.input[2]
    y_at = 7 if node.op_type == "QGemm" else scale_in + 2
    y_scale = node.input[y_at] if len(node.input) > y_at else ""  # QGemm may output float
    y_zp = node.input[y_at + 1] if len(node.input) > y_at + 1 else ""
    bias_in = {"QLinearConv": 8, "QGemm": 6}.get(node.op_type)
    inputs = [x_in, w_name]
    if bias_in is not None and len(node.input) > bias_in and node.input[bias_in]:
        q_bias = g.const(node.input[bias_in])
        x_s = g.const(x_scale)
        assert q_bias is not None and x_s is not None
        step = float(np.ravel(x_s)[0]) * np.asarray(weight.scales, dtype=np.float64)
        bias = (q_bias.astype(np.float64) * step).astype(np.float32)
        consts.append(numpy_helper.from_array(bias, f"{name}.bias"))
        inputs.append(f"{name}.bias")
    out = node.output[0]
    if mode == "twin":
        return _with_relu(float_kind, inputs, node, attrs, _zero_floor(g, y_zp)), [], consts
    dq_out, op_out = f"{name}.input", f"{name}.output" if y_scale else out
    made = [
        helper.make_node("DequantizeLinear", [x_in, x_scale, x_zp], [dq_out], f"{name}/dequantize"),
        helper.make_node(float_kind, [dq_out, *inputs[1:]], [op_out], name, **attrs),
    ]
    if y_scale:
        quantize = [op_out, y_scale, y_zp] if y_zp else [op_out, y_scale]
        made.append(helper.make_node("QuantizeLinear", quantize, [out], f"{name}/quantize"))
    return made, [], consts


def _with_relu(
    kind: str, inputs: list[str], node: onnx.NodeProto, attrs: dict[str, Any], relu: bool
) -> list[onnx.NodeProto]:
    """The float op writing ``node``'s output, or through the Relu the quantizer folded."""
    name, out = file_name(node), node.output[0]
    if not relu:
        return [helper.make_node(kind, inputs, [out], name, **attrs)]
    return [
        helper.make_node(kind, inputs, [f"{out}/pre_relu"], name, **attrs),
        helper.make_node("Relu", [f"{out}/pre_relu"], [out], f"{name}/relu"),
    ]


def _bias_of(g: Graph, add: onnx.NodeProto, end: str) -> np.ndarray | None:
    """The per-output-channel constant an Add puts on ``end`` (shape [C] or [1, C, 1, 1])."""
    other = next((i for i in add.input if i != end), "")
    value = g.const(other)
    if value is None or value.dtype.kind != "f":
        return None
    flat = np.ravel(value)
    if value.ndim > 1 and value.shape[1] != flat.size:
        return None
    return flat.astype(np.float32)


def _dq_value(g: Graph, node: onnx.NodeProto) -> np.ndarray:
    q = g.const(node.input[0])
    scale = g.const(node.input[1])
    assert q is not None and scale is not None
    zero = g.const(node.input[2]) if len(node.input) > 2 else None
    axis = int(_attr(node, "axis", 1)) % max(q.ndim, 1)
    return dequantize(q, scale, np.zeros(1) if zero is None else zero, axis)


def _zero_floor(g: Graph, zp_name: str) -> bool:
    """A quantized activation whose range starts at exactly 0 (zero point = the type's
    lowest value): what a folded Relu leaves; a symmetric or signed range keeps negatives."""
    zero = g.const(zp_name)
    if zero is None or zero.size != 1:
        return False
    return int(np.ravel(zero)[0]) == int(np.iinfo(zero.dtype).min)


def folded_clamp(g: Graph, quant: onnx.NodeProto) -> tuple[float, float] | None:
    """The range ``[0, top]`` a QDQ ``QuantizeLinear`` clamps to when it stands for an
    activation the quantizer removed, else None.

    onnxruntime's QDQ quantizer (asymmetric activations) deletes a Relu or Clip after a
    Conv/Gemm/MatMul/Add and gives the producer's output the activation's quantization range:
    the pair then clamps to ``[0, top]``, ``top`` the largest value calibration saw after the
    activation (6 at most for a ReLU6). The file no longer says which activation it was; what
    the pair computes, rounding aside, is ``Clip(0, top)``, and that is what the float twin
    and the float fallback put back."""
    producer = g.producer.get(quant.input[0])
    if producer is None or producer.op_type not in LINEAR or len(quant.input) < 3:
        return None
    if not _zero_floor(g, quant.input[2]):
        return None
    scale, zero = g.const(quant.input[1]), g.const(quant.input[2])
    assert scale is not None and zero is not None  # _zero_floor read the zero point
    top = int(np.iinfo(zero.dtype).max) - int(np.ravel(zero)[0])
    return 0.0, float(np.float32(np.ravel(scale)[0]) * np.float32(top))


def clip_node(
    x: str, out: str, name: str, clamp: tuple[float, float]
) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``Clip(x, low, high)`` writing ``out`` (opset 11 and later: bounds are inputs), in the
    (nodes, replaced nodes, constants) form of the twin's rewrites."""
    low, high = f"{name or out}/clip_min", f"{name or out}/clip_max"
    consts = [
        numpy_helper.from_array(np.array(clamp[0], dtype=np.float32), low),
        numpy_helper.from_array(np.array(clamp[1], dtype=np.float32), high),
    ]
    return [helper.make_node("Clip", [x, low, high], [out], name)], [], consts


def _prune_dead(model: onnx.ModelProto) -> None:
    """Drop the nodes whose outputs nothing reads (the scale products, DynamicQuantizeLinear's
    extra outputs) and the initializers nothing reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    changed = True
    while changed:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output if o)]
        for n in dead:
            graph.node.remove(n)
        changed = bool(dead)
    read = {i for n in graph.node for i in n.input} | outputs
    listed = {i.name for i in graph.input}
    for init in [i for i in graph.initializer if i.name not in read and i.name not in listed]:
        graph.initializer.remove(init)
