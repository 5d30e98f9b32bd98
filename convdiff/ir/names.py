"""The names the model files give the layers of a canonical graph.

Findings and patches name layers as the model files do (ONNX node names, TFLite op output
tensor names, a torch.export program's module paths, Keras layer names). TVM's importers keep
no names, but they emit one Relax op per file op in file order, so the k-th ``Conv`` node of
an ONNX file is the k-th ``conv2d`` of its raw graph; a kind whose counts differ keeps the
canonical ids. Where the file says how many weights a conv or dense op holds (ONNX, TFLite),
that order is checked: a weighted layer is named only by a file op of its own weight size,
the k-th of that size, so two branches TVM emits in another order than the file still get
their own names, and where the sizes cannot be paired no name is given rather than a wrong one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from convdiff.ir.graph import CanonicalGraph
from convdiff.ir.kinds import KIND_CLASSES, match_layer

WEIGHTED = ("conv2d", "dense")  # kinds whose file ops say their weight's size


class FileOp(NamedTuple):
    """One op of a model file that TVM makes a layer of."""

    kind: str  # the canonical op kind (:data:`ONNX_KINDS`, :data:`TFLITE_KINDS`)
    name: str  # what the file calls it
    index: int  # its position in the file's op list
    size: int | None = None  # a weighted op's weight element count, when the file says


ONNX_KINDS = {
    "Conv": "conv2d",
    "Gemm": "dense",
    "MatMul": "dense",
    "MaxPool": "pool_max",
    "AveragePool": "pool_avg",
    "GlobalAveragePool": "pool_global_avg",
    "BatchNormalization": "batch_norm",
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softmax": "softmax",
    "Concat": "concat",
    "Clip": "clip",
    "Resize": "resize",
    "Pad": "pad",
    "LayerNormalization": "layer_norm",
    "Erf": "erf",  # a GELU as the torchscript exporter writes it
    "Gelu": "gelu",
    "HardSwish": "clip",  # TVM writes x * clip(x + 3, 0, 6) / 6: one clip per node
    "HardSigmoid": "clip",
    # quantized ops: the float twin TVM imports has their float op in their place
    # (convdiff.ir.onnx_quant), so they name the layers of that op's kind
    "ConvInteger": "conv2d",
    "QLinearConv": "conv2d",
    "MatMulInteger": "dense",
    "QLinearMatMul": "dense",
    "QGemm": "dense",
    "QLinearGlobalAveragePool": "pool_global_avg",
    "QLinearAveragePool": "pool_avg",
    "QLinearSoftmax": "softmax",
    "QLinearSigmoid": "sigmoid",
    "QLinearConcat": "concat",
}
ONNX_WEIGHT_INPUT = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3}  # else input 1
OTHER_KINDS = {
    "relax.nn.layer_norm": "layer_norm",
    "relax.erf": "erf",
    "relax.nn.gelu": "gelu",
}  # ops without a canonical kind, named
TFLITE_KINDS = {
    "CONV_2D": "conv2d",
    "DEPTHWISE_CONV_2D": "conv2d",
    "FULLY_CONNECTED": "dense",
    "MAX_POOL_2D": "pool_max",
    "AVERAGE_POOL_2D": "pool_avg",
    "SOFTMAX": "softmax",
    "CONCATENATION": "concat",
    "RESIZE_BILINEAR": "resize",
    "RESIZE_NEAREST_NEIGHBOR": "resize",
    "PAD": "pad",
    "PADV2": "pad",
    # a full-integer model's precision findings name these too (every op computes in int8)
    "MEAN": "pool_global_avg",
    "ADD": "add",
    "MUL": "mul",
    "SUB": "sub",
    "LOGISTIC": "sigmoid",
    "TANH": "tanh",
}


def file_names(
    raw: CanonicalGraph,
    torch_ops: list[list[Any]] | None = None,
    keras_classes: dict[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, int]]:
    """Layer id -> name in the model file, and layer id -> op index in the file (see the
    module docstring). Empty when the file cannot be read or is of another kind.

    What needs a framework to read is read by the caller in a worker and given here:
    ``torch_ops``, a torch.export program's nodes (``[kind, name, index]``, the torch
    applier's ``file_ops`` task); ``keras_classes``, for a Keras model that TVM imported
    through a float conversion (``raw.meta["route"]``), its layer names and classes, onto
    which the conversion's op names are mapped (:func:`keras_names`)."""
    path, fw = raw.meta.get("path"), raw.meta.get("framework")
    try:
        if fw == "onnx":
            ops = _onnx_ops(path)
        elif fw == "tflite":
            ops = _tflite_ops(path)
        elif fw == "torch" and torch_ops is not None:
            ops = [FileOp(str(k), str(n), int(i)) for k, n, i in torch_ops]
        else:
            return {}, {}
    except Exception:  # names are a convenience: the canonical ids still identify layers
        return {}, {}
    if raw.meta.get("route") and keras_classes:
        renamed = keras_names(ops, keras_classes)
        ops = [op._replace(name=renamed.get(op.name, op.name)) for op in ops]
    names, index = {}, {}
    for kind in dict.fromkeys(op.kind for op in ops):
        in_file = [op for op in ops if op.kind == kind]
        layers = [lay for lay in raw.layers if _kind(raw, lay) == kind]
        for lay, op in pair_ops(in_file, [(lay.id, _weight_size(lay)) for lay in layers]):
            names[lay], index[lay] = op.name, op.index
    return names, index


def pair_ops(
    in_file: list[FileOp], layers: list[tuple[str, int | None]]
) -> list[tuple[str, FileOp]]:
    """Pair the raw layers ``(id, weight size)`` of one kind with the file's ops of that kind:
    in order, as TVM emits them; where both sides give weight sizes and the order pairs
    different sizes, the k-th op of each size with the k-th layer of that size. Nothing is
    paired when the counts differ (in all or for a size): no name is better than a wrong one."""
    if len(in_file) != len(layers):
        return []
    sizes = [op.size for op in in_file], [size for _, size in layers]
    if None in sizes[0] or None in sizes[1] or sizes[0] == sizes[1]:
        return [(lid, op) for (lid, _), op in zip(layers, in_file, strict=True)]
    if sorted(sizes[0]) != sorted(sizes[1]):  # type: ignore[type-var]
        return []
    by_size: dict[int | None, list[FileOp]] = {}
    for op in in_file:
        by_size.setdefault(op.size, []).append(op)
    return [(lid, by_size[size].pop(0)) for lid, size in layers]


def _weight_size(layer: Any) -> int | None:
    weight = layer.params.get("weight") if layer.op in WEIGHTED else None
    return None if weight is None else int(np.size(weight))


def keras_names(ops: list[FileOp], classes: dict[str, str]) -> dict[str, str]:
    """Op name in a Keras model's conversion -> the Keras layer (``model.get_layer()``'s name).

    A name such as ``tiny_cnn_1/relu_1/Relu;tiny_cnn_1/conv_1/convolution`` holds several
    layers' name scopes, each perhaps with TF's ``_<n>`` suffix: the candidates are those whose
    class makes the op's kind (:func:`convdiff.ir.kinds.match_layer`). A layer goes to
    one op only: ops with one candidate left take it, which may leave one for another op, and
    so on; the ops of a layer's own kind before the activations a converter fused into it. An
    op still ambiguous keeps its own name."""
    fused = ("softmax", "relu", "clip")
    candidates = {
        op.name: match_layer(op.name, op.kind, classes)
        for op in sorted(ops, key=lambda op: op.kind in fused)
        if op.kind in KIND_CLASSES
    }
    chosen: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, found in candidates.items():
            left = [c for c in found if c not in chosen.values()]
            if name not in chosen and len(left) == 1:
                chosen[name], changed = left[0], True
                break  # first come first served, in the order above
    return chosen


def _kind(raw: CanonicalGraph, layer: Any) -> str:
    """The file-level kind of a raw layer: ONNX Clip becomes max/min with scalar constants;
    torch's bias-free ``linear`` a matmul with a broadcast constant (a dense layer once
    canonicalized); an add of a constant to a conv's or dense layer's output is the bias that
    the file's conv or dense op holds, not an op of its own."""
    if layer.op == "other" and layer.attrs.get("tvm_op") in OTHER_KINDS:
        return OTHER_KINDS[layer.attrs["tvm_op"]]
    if layer.op == "other" and layer.attrs.get("tvm_op") == "relax.matmul":
        weight = raw[layer.inputs[1]] if len(layer.inputs) == 2 else None
        if weight is not None and not weight.inputs and len(weight.params) == 1:
            return "dense"
    if layer.op == "add" and "const" in layer.params and _after_weighted(raw, layer):
        return ""  # a conv's or dense layer's bias: the file's conv or dense op holds it
    if layer.op in ("maximum", "minimum") and np.size(layer.params.get("const", [])) == 1:
        before = raw[layer.inputs[0]]
        scalar_max = before.op == "maximum" and np.size(before.params.get("const", [])) == 1
        return "" if layer.op == "minimum" and scalar_max else "clip"
    return layer.op


def _after_weighted(raw: CanonicalGraph, layer: Any) -> bool:
    """Whether ``layer`` takes the output of a conv or dense layer (TVM writes their bias as an
    add of its own; torch's bias-free ``linear`` a matmul, see :func:`_kind`)."""
    if not layer.inputs or layer.inputs[0] not in raw:
        return False
    producer = raw[layer.inputs[0]]
    return producer.op in WEIGHTED or _kind(raw, producer) == "dense"


def _onnx_ops(path: str) -> list[FileOp]:
    import onnx

    model = onnx.load(path, load_external_data=False)
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    weights = set(sizes)
    constant = _constant_tensors(model, weights)
    for node in model.graph.node:  # a weight behind DequantizeLinear has its integers' size
        if node.op_type == "DequantizeLinear" and node.input[0] in sizes:
            sizes.setdefault(node.output[0], sizes[node.input[0]])
    folded = _folded_clamps(model)
    ops = []
    for i, node in enumerate(model.graph.node):
        kind = ONNX_KINDS.get(node.op_type) or ("clip" if i in folded else None)
        if node.op_type == "MatMul" and (len(node.input) < 2 or node.input[1] not in constant):
            kind = None  # two activations (attention): TVM makes no dense layer of it
        if kind:
            at = ONNX_WEIGHT_INPUT.get(node.op_type, 1)
            weight = node.input[at] if kind in WEIGHTED and len(node.input) > at else ""
            ops.append(FileOp(kind, _onnx_name(node, weights), i, sizes.get(weight)))
    return ops


def _folded_clamps(model: Any) -> dict[int, tuple[float, float]]:
    """Node index -> range of each QDQ QuantizeLinear that stands for an activation the
    quantizer removed: the float twin makes it a Clip of that range, named after it."""
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return {}
    from convdiff.ir import onnx_quant

    g = onnx_quant.Graph(model)
    found = {}
    for i, node in enumerate(model.graph.node):
        clamp = onnx_quant.folded_clamp(g, node) if node.op_type == "QuantizeLinear" else None
        if clamp is not None:
            found[i] = clamp
    return found


def _constant_tensors(model: Any, weights: set[str]) -> set[str]:
    """Initializers and what nodes compute from constants only (a transposed or dequantized
    weight): the tensors TVM folds into a layer's parameters."""
    constant = set(weights)
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.input and all(i in constant for i in node.input)):
            constant.update(node.output)
    return constant


def _onnx_name(node: Any, weights: set[str]) -> str:
    """The node's name; for tf2onnx's generated ones (``Conv__10``) its weight's TF name,
    which holds the Keras layer's (``tiny_cnn_1/conv_1/convolution/merged_input``)."""
    name = node.name or node.output[0]
    if re.search(r"__\d+$", name):
        weight = next((i for i in node.input[1:] if i in weights), None)
        if weight:
            return weight.removeprefix("StatefulPartitionedCall/").removesuffix(":0")
    return name


def _tflite_ops(path: str) -> list[FileOp]:
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    op_names = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
        if kind in TFLITE_KINDS:
            out = graph.Tensors(int(op.OutputsAsNumpy()[0])).Name().decode()
            size = None
            if TFLITE_KINDS[kind] in WEIGHTED and op.InputsLength() > 1:
                size = int(np.prod(graph.Tensors(int(op.Inputs(1))).ShapeAsNumpy()))
            ops.append(FileOp(TFLITE_KINDS[kind], out, i, size))
    return ops


def quant_evidence(
    info: dict[str, Any], path: str, index: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Target layer id -> the integer tensor its weight came from (dynamic-range TFLite files,
    quantized ONNX files: :func:`onnx_evidence`)."""
    if not info.get("quant"):
        return {}
    if str(path).endswith(".onnx"):
        return onnx_evidence(path, index)
    from convdiff.ir import tflite_quant

    if tflite_quant.is_full_integer(path):
        return full_integer_evidence(path, index)
    by_index = {i: lid for lid, i in index.items()}
    evidence = {}
    for tensor in tflite_quant.read(path).quantized:
        for consumer in tensor.consumers:
            lid = by_index.get(int(consumer.rpartition("#")[2]))
            if lid is not None:
                evidence[lid] = {
                    "tensor": tensor.name,
                    "dtype": tensor.dtype,
                    "scales": tensor.scales,
                }
    return evidence


def full_integer_evidence(path: str, index: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Target layer id -> what a full-integer TFLite file quantizes in that layer's op: every
    op computing in integers has ``activations`` (its op, activations' type, input and output
    scales and zero points, its int32 bias); one with an int8 weight (or an int8 constant
    operand, the canonical layer's ``const``) also the weight's tensor, dtype and scales
    (``details`` then goes into its weight's finding) and ``bias_scales``, the
    int32 bias's step per channel (the input's scale times the weight's), which explains the
    bias's rounding (:func:`convdiff.stages.weights.compare_param`)."""
    from convdiff.ir import tflite_quant

    by_index = {i: lid for lid, i in index.items()}
    evidence: dict[str, dict[str, Any]] = {}
    for op in tflite_quant.quantized_ops(path):
        lid = by_index.get(op.index)
        if lid is None:
            continue
        details = op.details()
        evidence[lid] = {"activations": details}
        if op.weight is not None:
            weight = {
                "tensor": op.weight.name,
                "dtype": op.weight.dtype,
                "scales": op.weight.scales,
                "details": details,
            }
            evidence[lid].update(weight)
            # an add's, mul's or sub's int8 operand is the canonical layer's "const"
            evidence[lid]["const"] = weight
        if op.bias is not None:
            evidence[lid]["bias_scales"] = op.bias.scales
    return evidence


def onnx_evidence(path: str, index: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Target layer id -> its quantized weight in an ONNX file: the op that computes with it
    (ConvInteger, QLinearConv, a Conv behind a DequantizeLinear...) is the layer's file op.
    ``details`` (the op, the zero points -- one number when they are all equal -- and whether
    the activations are quantized dynamically, statically or not) goes into the finding; an
    int32 bias is ``bias``. The Clip a QDQ pair became in the float twin (an activation the
    quantizer folded into the pair's range) has ``clamp``: that range."""
    import onnx

    from convdiff.ir import onnx_quant

    by_index = {i: lid for lid, i in index.items()}
    evidence: dict[str, dict[str, Any]] = {}
    for weight in onnx_quant.read(path).weights:
        lid = by_index.get(weight.index)
        if lid is not None:
            zero = weight.zero_points
            evidence[lid] = {
                "tensor": weight.tensor,
                "dtype": weight.dtype,
                "scales": weight.scales,
                "details": {
                    "op": weight.op_type,
                    "zero_points": zero if len(set(zero)) > 1 else zero[0],
                    "activations": weight.activations,
                },
            }
            if weight.bias is not None:  # an int32 bias: precision lost there too
                evidence[lid]["bias"] = weight.bias
    model = onnx.load(path, load_external_data=False)
    for i, clamp in _folded_clamps(model).items():  # an activation folded into a range
        lid = by_index.get(i)
        if lid is not None:
            evidence[lid] = {"clamp": list(clamp), "details": {"op": "QuantizeLinear"}}
    return evidence
