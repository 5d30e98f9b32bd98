"""Patch applier for .tflite files: the flatbuffer's object API (``ModelT``), no interpreter.

Layers are named by their op's first output tensor. A weight set from the source is written as
float32 with its quantization dropped (a dynamic-range op then runs its float kernel); a tensor
or buffer that other ops share, or a weight produced by a DEQUANTIZE op, gets a new float32
tensor instead of an in-place change. Attributes live in the op's builtin options.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.ir import tflite_quant
from convdiff.repair.appliers.dispatch import SkipEdit, apply_each, patch_tensor
from convdiff.repair.patch import Edit

# op kind -> input index of (weight, bias)
SLOTS = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (1, 3),
}
POOLS = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D")
CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
ACTIVATIONS = {"none": "NONE", "linear": "NONE", "identity": "NONE", "relu": "RELU"}
ACTIVATIONS |= {"relu6": "RELU6", "relu_n1_to_1": "RELU_N1_TO_1", "tanh": "TANH"}
RESIZES = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
# coordinate mode -> (align_corners, half_pixel_centers), as TVM's frontend reads them back;
# the nearest rounding follows from these two, so TFLite has no rounding of its own to set
RESIZE_COORDINATES = {
    "align_corners": (True, False),
    "half_pixel": (False, True),
    "asymmetric": (False, False),
}
# ops whose output has the shape of their (first) input: a changed output width flows through
SHAPE_KEEPING = ("SOFTMAX", "LOGISTIC", "RELU", "RELU6", "TANH", "DEQUANTIZE", "QUANTIZE")


def apply(
    target: Path, edits: list[Edit], tensors: dict[str, np.ndarray]
) -> tuple[bytes, list[Edit], list[tuple[Edit, str]]]:
    """The patched model's bytes, the edits applied and the edits skipped with reasons."""
    model = tflite_quant.unpack(target)

    def set_tensor(edit: Edit) -> None:
        value = patch_tensor(edit, tensors).astype(np.float32)
        _set_tensor(model, _find(model, edit.layer), edit, value)

    applied, refused = apply_each(
        edits,
        {
            "set_tensor": set_tensor,
            "set_attr": lambda e: _set_attr(model, _find(model, e.layer), e.field, e.value),
            "insert_node": lambda e: _fuse_activation(model, _find(model, e.layer), e.field),
        },
        "TFLite",
    )
    return tflite_quant.pack(model), applied, refused


def read_tensor(path: Path, layer: str, field: str) -> np.ndarray | None:
    """The layer's weight/bias as the file computes with it, in float32."""
    model = tflite_quant.unpack(path)
    try:
        op = _find(model, layer)
        index = _slot_tensor(model, op, field)
    except SkipEdit:
        return None
    return None if index < 0 else _value(model, index)


# -- lookups ---------------------------------------------------------------------------------


def _name(tensor: Any) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _find(model: Any, layer: str) -> Any:
    graph = model.subgraphs[0]
    for op in graph.operators:
        if len(op.outputs) and _name(graph.tensors[int(op.outputs[0])]) == layer:
            return op
    raise SkipEdit(f"no op whose first output is named {layer!r} in the file")


def _slot(model: Any, op: Any, field: str) -> int:
    kind = tflite_quant.op_kind(model, op)
    if kind not in SLOTS:
        raise SkipEdit(f"{kind} has no weight/bias inputs convdiff can set")
    if field not in ("weight", "bias"):
        raise SkipEdit(f"unknown tensor field {field!r} (weight or bias)")
    return SLOTS[kind][0 if field == "weight" else 1]


def _slot_tensor(model: Any, op: Any, field: str) -> int:
    slot = _slot(model, op, field)
    return int(op.inputs[slot]) if slot < len(op.inputs) else -1


def _producer(model: Any, index: int) -> Any:
    return next((op for op in model.subgraphs[0].operators if index in list(op.outputs)), None)


def _readers(model: Any, index: int) -> int:
    graph = model.subgraphs[0]
    reads = sum(list(op.inputs).count(index) for op in graph.operators)
    return reads + list(graph.outputs).count(index) + list(graph.inputs).count(index)


def _value(model: Any, index: int) -> np.ndarray | None:
    """A constant tensor's float32 value: int8 dequantized, float16 upcast, through DEQUANTIZE."""
    from ai_edge_litert import schema_py_generated as schema

    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or len(data) == 0:
        producer = _producer(model, index)
        if producer is not None and tflite_quant.op_kind(model, producer) == "DEQUANTIZE":
            return _value(model, int(producer.inputs[0]))
        return None
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    dtype = types.get(tensor.type, "?")
    shape = [int(d) for d in tensor.shape]
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    if dtype in ("FLOAT32", "FLOAT16"):
        return np.frombuffer(raw, dtype=np.dtype(dtype.lower())).reshape(shape).astype(np.float32)
    quant = tensor.quantization
    if dtype not in tflite_quant._INT_TYPES or quant is None or quant.scale is None:
        return None
    q = tflite_quant.QuantTensor(
        index=index,
        name=_name(tensor),
        dtype=dtype,
        shape=shape,
        scales=[float(s) for s in quant.scale],
        zero_points=[int(z) for z in quant.zeroPoint],
        quantized_dimension=int(quant.quantizedDimension),
        values=np.frombuffer(raw, dtype=tflite_quant._INT_TYPES[dtype]).reshape(shape),
    )
    return q.dequantized()


# -- edits -----------------------------------------------------------------------------------


def _new_tensor(model: Any, name: str, shape: tuple[int, ...]) -> int:
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[0]
    taken = {_name(t) for t in graph.tensors}
    unique, k = name, 1
    while unique in taken:
        k += 1
        unique = f"{name}_{k}"
    tensor = schema.TensorT()
    tensor.name = unique
    tensor.shape = np.asarray(shape, dtype=np.int32)
    tensor.type = schema.TensorType.FLOAT32
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _set_tensor(model: Any, op: Any, edit: Edit, value: np.ndarray) -> None:
    slot = _slot(model, op, edit.field)
    index = int(op.inputs[slot]) if slot < len(op.inputs) else -1
    old = _value(model, index) if index >= 0 else None
    if index >= 0 and old is None:
        raise SkipEdit(f"input {slot} of {edit.layer!r} is not a constant")
    producer = _producer(model, index) if index >= 0 else None
    if index < 0 or producer is not None or _readers(model, index) > 1:
        new = _new_tensor(model, f"{edit.layer}/{edit.field}", value.shape)
        inputs = [int(i) for i in op.inputs]
        inputs += [-1] * (slot + 1 - len(inputs))
        inputs[slot] = new
        op.inputs = np.asarray(inputs, dtype=np.int32)
        if producer is not None and not _readers(model, index):
            _remove_op(model, producer)
        index = new
    tflite_quant.set_float32(model, index, value)
    widened = old is not None and edit.field == "weight" and old.shape[0] != value.shape[0]
    if widened and tflite_quant.op_kind(model, op) == "FULLY_CONNECTED":
        _widen(model, op, old.shape[0], value.shape[0])


def _remove_op(model: Any, op: Any) -> None:
    """Drop an op nothing reads any more (its tensors stay, unreferenced)."""
    model.subgraphs[0].operators.remove(op)


def _widen(model: Any, op: Any, old: int, new: int) -> None:
    """A FULLY_CONNECTED with more or fewer units: its output's last dimension, and that of the
    shape-keeping ops after it (SOFTMAX, ...), follow."""
    graph = model.subgraphs[0]
    frontier = [op]
    while frontier:
        current = frontier.pop()
        for t in current.outputs:
            tensor = graph.tensors[int(t)]
            for attr in ("shape", "shapeSignature"):
                dims = getattr(tensor, attr)
                if dims is not None and len(dims) and int(dims[-1]) == old:
                    dims = np.asarray(dims, dtype=np.int32).copy()
                    dims[-1] = new
                    setattr(tensor, attr, dims)
            frontier += [
                nxt
                for nxt in graph.operators
                if len(nxt.inputs)
                and int(nxt.inputs[0]) == int(t)
                and tflite_quant.op_kind(model, nxt) in SHAPE_KEEPING
            ]


def _set_attr(model: Any, op: Any, field: str, value: Any) -> None:
    from ai_edge_litert import schema_py_generated as schema

    kind = tflite_quant.op_kind(model, op)
    options = op.builtinOptions
    if field == "activation":
        if options is None or not hasattr(options, "fusedActivationFunction"):
            raise SkipEdit(f"{kind} has no fused activation")
        name = ACTIVATIONS.get(str(value).lower()) if value is not None else "NONE"
        if name is None:
            raise SkipEdit(f"TFLite has no fused activation {value!r}")
        options.fusedActivationFunction = getattr(schema.ActivationFunctionType, name)
    elif field == "strides" and options is not None and hasattr(options, "strideH"):
        options.strideH, options.strideW = _pair(value)
    elif field == "dilation" and kind in CONVS:
        options.dilationHFactor, options.dilationWFactor = _pair(value)
    elif field == "kernel" and kind in POOLS:
        options.filterHeight, options.filterWidth = _pair(value)
    elif field == "pads" and (kind in CONVS or kind in POOLS):
        _set_padding(model, op, kind, [int(v) for v in value])
    elif field == "coordinate_mode" and kind in RESIZES:
        if value not in RESIZE_COORDINATES:
            raise SkipEdit(f"TFLite {kind} cannot sample with coordinate mode {value!r}")
        options.alignCorners, options.halfPixelCenters = RESIZE_COORDINATES[value]
    else:
        raise SkipEdit(f"TFLite {kind} has no {field} attribute convdiff can set")


def _fuse_activation(model: Any, op: Any, activation: str) -> None:
    """An activation missing after ``op``, as the op's fused activation (no new op): the
    ``activation`` attribute edit, on an op that fuses none yet."""
    from ai_edge_litert import schema_py_generated as schema

    fused = getattr(op.builtinOptions, "fusedActivationFunction", None)
    if fused not in (None, schema.ActivationFunctionType.NONE):
        raise SkipEdit(f"TFLite {tflite_quant.op_kind(model, op)} already fuses an activation")
    _set_attr(model, op, "activation", activation)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (int, float)):
        return int(value), int(value)
    h, w = value
    return int(h), int(w)


def _set_padding(model: Any, op: Any, kind: str, pads: list[int]) -> None:
    """SAME or VALID, whichever gives exactly ``pads`` ([top, left, bottom, right])."""
    from ai_edge_litert import schema_py_generated as schema

    graph, options = model.subgraphs[0], op.builtinOptions
    in_shape = [int(d) for d in graph.tensors[int(op.inputs[0])].shape]
    if len(in_shape) != 4 or min(in_shape[1:3]) <= 0:
        raise SkipEdit(f"{kind}'s input size is unknown, so SAME cannot be checked against {pads}")
    if kind in POOLS:
        kernel, dilation = (options.filterHeight, options.filterWidth), (1, 1)
    else:
        w_shape = graph.tensors[int(op.inputs[1])].shape  # OHWI, depthwise 1HWO
        kernel = (int(w_shape[1]), int(w_shape[2]))
        dilation = (options.dilationHFactor, options.dilationWFactor)
    strides = (options.strideH, options.strideW)
    same = [0, 0, 0, 0]
    for axis in range(2):
        size, s, k, d = in_shape[1 + axis], strides[axis], kernel[axis], dilation[axis]
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        same[axis], same[axis + 2] = total // 2, total - total // 2
    if pads == [0, 0, 0, 0] and options.padding == schema.Padding.VALID:
        return  # already so (SAME may give no pads either)
    if pads == same:
        options.padding = schema.Padding.SAME
    elif pads == [0, 0, 0, 0]:
        options.padding = schema.Padding.VALID
    else:
        _insert_pad(model, op, kind, pads)
        options.padding = schema.Padding.VALID


def _insert_pad(model: Any, op: Any, kind: str, pads: list[int]) -> None:
    """Explicit pads TFLite's SAME/VALID cannot give: a PAD op (PADV2 with the lowest float
    for a max pool, whose padding must never win) feeds ``op``, which then pads VALID."""
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[0]
    source = graph.tensors[int(op.inputs[0])]
    if kind in ("AVERAGE_POOL_2D", "L2_POOL_2D"):
        raise SkipEdit(
            f"TFLite cannot express asymmetric explicit pads on {kind}; a PAD op would count "
            "the padding in the average"
        )
    if source.type != schema.TensorType.FLOAT32 or min(pads) < 0:
        raise SkipEdit(f"TFLite cannot express asymmetric explicit pads on {kind}; insert a PAD op")
    top, left, bottom, right = pads
    name = _name(graph.tensors[int(op.outputs[0])])
    paddings = _new_tensor(model, f"{name}/paddings", (4, 2))
    table = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32)
    tflite_quant.set_float32(model, paddings, np.zeros((4, 2), np.float32))  # a buffer
    model.buffers[graph.tensors[paddings].buffer].data = np.frombuffer(table.tobytes(), np.uint8)
    graph.tensors[paddings].type = schema.TensorType.INT32
    inputs = [int(op.inputs[0]), paddings]
    pad_kind, pad_options = "PAD", schema.PadOptionsT()
    if kind == "MAX_POOL_2D":
        lowest = _new_tensor(model, f"{name}/pad_value", ())
        tflite_quant.set_float32(model, lowest, np.array(np.finfo(np.float32).min, np.float32))
        inputs.append(lowest)
        pad_kind, pad_options = "PADV2", schema.PadV2OptionsT()
    shape = [int(d) for d in source.shape]
    shape[1] += top + bottom
    shape[2] += left + right
    padded = _new_tensor(model, f"{name}/padded", tuple(shape))
    if source.shapeSignature is not None:
        signature = [int(d) for d in source.shapeSignature]
        graph.tensors[padded].shapeSignature = np.asarray(signature[:1] + shape[1:], np.int32)
    pad = schema.OperatorT()
    pad.opcodeIndex = _opcode(model, pad_kind)
    pad.inputs = np.asarray(inputs, dtype=np.int32)
    pad.outputs = np.asarray([padded], dtype=np.int32)
    pad.builtinOptionsType = getattr(schema.BuiltinOptions, f"{pad_kind.title()}Options")
    pad.builtinOptions = pad_options
    graph.operators.insert(graph.operators.index(op), pad)
    inputs = [int(i) for i in op.inputs]
    inputs[0] = padded
    op.inputs = np.asarray(inputs, dtype=np.int32)


def _opcode(model: Any, kind: str) -> int:
    """The index of builtin ``kind``'s operator code, added (version 1) when missing."""
    from ai_edge_litert import schema_py_generated as schema

    number = getattr(schema.BuiltinOperator, kind)
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == number:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = number, min(number, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
