"""Patch applier for ONNX files: edits on the protobuf with onnx + numpy, no runtime.

A tensor shared with other nodes is never changed in place (a new initializer is made), a
weight produced by DequantizeLinear / Cast is replaced by a float initializer (the orphaned
producers are pruned), a quantized op (ConvInteger / MatMulInteger and their dynamic-quantize
chain, QLinearConv, QLinearMatMul, QGemm) whose weight or bias is set becomes its float op
first (:func:`convdiff.ir.onnx_quant.float_op`: named as before, reading the float input; a
QLinear op between DequantizeLinear and QuantizeLinear, its neighbours being quantized), and
a changed weight shape refreshes the declared output shapes, so
``onnx.checker`` and shape inference pass on the result. Attribute names are convdiff's
canonical ones (``pads`` is ``[top, left, bottom, right]``, which is ONNX's own order for 2-D).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convdiff.core.errors import ConvdiffError
from convdiff.ir import onnx_quant
from convdiff.repair.appliers.dispatch import SkipEdit, apply_each, patch_tensor
from convdiff.repair.patch import Edit

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PASS_THROUGH = ("Cast", "Identity")
# canonical field -> (ONNX attribute, op types that carry it, value kind)
ATTRS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "pads": ("pads", ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"), "ints"),
    "strides": ("strides", ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"), "ints"),
    "dilation": ("dilations", ("Conv", "ConvTranspose", "MaxPool"), "ints"),
    "groups": ("group", ("Conv", "ConvTranspose"), "int"),
    "kernel": (
        "kernel_shape",
        ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"),
        "ints",
    ),
    "epsilon": (
        "epsilon",
        ("BatchNormalization", "InstanceNormalization", "LayerNormalization"),
        "float",
    ),
    "ceil_mode": ("ceil_mode", ("MaxPool", "AveragePool", "LpPool"), "int"),
    "count_include_pad": ("count_include_pad", ("AveragePool",), "int"),
    # the canonical (logical NCHW) axis: the file's own in an NCHW ONNX graph; in an NHWC
    # stretch of a tf2onnx graph it is not, and the verify loop then drops the edit
    "axis": ("axis", ("Softmax", "LogSoftmax", "Concat"), "int"),
    # Resize: the canonical names are ONNX's, but for TVM's "round" (ONNX has no plain round)
    "resize_method": ("mode", ("Resize",), "str"),
    "coordinate_mode": ("coordinate_transformation_mode", ("Resize",), "str"),
    "rounding": ("nearest_mode", ("Resize",), "str"),
    "cubic_alpha": ("cubic_coeff_a", ("Resize",), "float"),
    "cubic_exclude": ("exclude_outside", ("Resize",), "int"),
}
# canonical op -> the ONNX node insert_node writes (relu6 and clip: a Clip)
INSERT_OPS = {
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softmax": "Softmax",
    "relu6": "Clip",
    "clip": "Clip",
}
ONNX_NAMES = {"rounding": {"round": "round_prefer_ceil"}}  # canonical value -> ONNX's


def apply(
    target: Path, edits: list[Edit], tensors: dict[str, np.ndarray]
) -> tuple[bytes, list[Edit], list[tuple[Edit, str]]]:
    """The patched model's bytes, the edits applied and the edits skipped with reasons."""
    model = onnx.load(str(target))
    reshaped: list[bool] = []  # a set_tensor that changed a tensor's shape: value_info is refreshed

    def set_tensor(edit: Edit) -> None:
        node = _float_op(model, _find(model, edit.layer))
        reshaped.append(_set_tensor(model, node, edit.field, patch_tensor(edit, tensors)))

    applied, refused = apply_each(
        edits,
        {
            "set_tensor": set_tensor,
            "set_attr": lambda e: _set_attr(model, _find(model, e.layer), e.field, e.value),
            "remove_node": lambda e: _remove_node(model, _find(model, e.layer)),
            "insert_node": lambda e: _insert_node(model, _find(model, e.layer), e.field, e.value),
            "move_node": lambda e: _move_node(model, _find(model, e.layer), e.value),
        },
        "ONNX",
    )
    if any(reshaped):
        _refresh_shapes(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConvdiffError(
            f"the patched model fails onnx.checker ({str(exc).splitlines()[0]})",
            "drop the edit that makes it invalid from the patch",
        ) from None
    return model.SerializeToString(), applied, refused


def read_tensor(path: Path, layer: str, field: str) -> np.ndarray | None:
    """The layer's weight/bias as the file computes with it, in float32."""
    model = onnx.load(str(path))
    try:
        node = _float_op(model, _find(model, layer))  # a quantized op: its dequantized values
        holder, index = _tensor_slot(model, node, field)
    except SkipEdit:
        return None
    if index >= len(holder.input) or not holder.input[index]:
        return None
    return _value(model, holder.input[index])


# -- lookups ---------------------------------------------------------------------------------


def _find(model: onnx.ModelProto, layer: str) -> onnx.NodeProto:
    """The node ``convdiff.ir.names.file_names`` calls ``layer``: its name (or first output),
    or for tf2onnx's generated names (``Conv__10``) its weight's TF name."""
    nodes = list(model.graph.node)
    weights = {i.name for i in model.graph.initializer}
    for pick in (
        lambda n: n.name,
        lambda n: n.name or n.output[0],
        lambda n: _tf2onnx_alias(n, weights),
    ):
        found = [n for n in nodes if pick(n) == layer]
        if found:
            return found[0]
    raise SkipEdit(f"no node named {layer!r} in the file")


def _float_op(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.NodeProto:
    """``node``, or for a quantized op the float op that replaces it (and its dynamic-quantize
    chain) in ``model`` (module docstring); the nodes and constants left unread are pruned."""
    if node.op_type not in onnx_quant.QUANT_OPS:
        return node
    try:
        made, gone, consts = onnx_quant.float_op(onnx_quant.Graph(model), node, "repair")
    except ValueError as exc:
        raise SkipEdit(str(exc)) from None
    graph = model.graph
    at = list(graph.node).index(node)
    orphans = [i for n in (node, *gone) for i in n.input if i]
    for old in (node, *gone):
        graph.node.remove(old)
    for k, new in enumerate(made):
        graph.node.insert(at + k, new)
    graph.initializer.extend(consts)
    for name in orphans:
        _prune(model, name)
    _topological_order(model)
    return next(n for n in graph.node if n.name == onnx_quant.file_name(node))


def _tf2onnx_alias(node: onnx.NodeProto, weights: set[str]) -> str | None:
    if not re.search(r"__\d+$", node.name or ""):
        return None
    weight = next((i for i in node.input[1:] if i in weights), None)
    return weight.removeprefix("StatefulPartitionedCall/").removesuffix(":0") if weight else None


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    return next((i for i in model.graph.initializer if i.name == name), None)


def _producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if name in n.output), None)


def _uses(model: onnx.ModelProto, name: str) -> int:
    """How many node inputs and graph outputs read tensor ``name``."""
    reads = sum(list(n.input).count(name) for n in model.graph.node)
    return reads + sum(o.name == name for o in model.graph.output)


def _value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """A constant tensor's float32 value, through Cast/Identity and DequantizeLinear."""
    init = _initializer(model, name)
    if init is not None:
        return numpy_helper.to_array(init).astype(np.float32)
    node = _producer(model, name)
    if node is None:
        return None
    if node.op_type == "Constant":
        attr = next((a for a in node.attribute if a.name == "value"), None)
        return None if attr is None else numpy_helper.to_array(attr.t).astype(np.float32)
    if node.op_type in PASS_THROUGH:
        return _value(model, node.input[0])
    if node.op_type == "DequantizeLinear":
        q, scale = _raw(model, node.input[0]), _raw(model, node.input[1])
        zero = _raw(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if q is None or scale is None:
            return None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        zero_f = np.zeros(1) if zero is None else zero.astype(np.float64).reshape(shape)
        deq = (q.astype(np.float64) - zero_f) * scale.astype(np.float64).reshape(shape)
        return deq.astype(np.float32)
    return None


def _raw(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    init = _initializer(model, name)
    if init is not None:
        return numpy_helper.to_array(init)
    node = _producer(model, name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
    return None


def _elem_type(model: onnx.ModelProto, name: str) -> int:
    """The element type a consumer of ``name`` sees (float32 when it cannot be told)."""
    init = _initializer(model, name)
    if init is not None:
        return init.data_type
    node = _producer(model, name)
    if node is not None and node.op_type == "Cast":
        return next(a.i for a in node.attribute if a.name == "to")
    if node is not None and node.op_type == "DequantizeLinear":
        scale = _initializer(model, node.input[1])
        return scale.data_type if scale is not None else onnx.TensorProto.FLOAT
    if node is not None and node.op_type == "Identity":
        return _elem_type(model, node.input[0])
    return onnx.TensorProto.FLOAT


def _tensor_slot(
    model: onnx.ModelProto, node: onnx.NodeProto, field: str
) -> tuple[onnx.NodeProto, int]:
    """The node and input index that hold ``field``: weight = input 1, bias = input 2; a
    MatMul's bias is the constant of the Add that alone consumes its output."""
    if node.op_type not in WEIGHTED:
        raise SkipEdit(f"{node.op_type} {node.name!r} has no weight/bias inputs convdiff can set")
    if field not in ("weight", "bias"):
        raise SkipEdit(f"unknown tensor field {field!r} (weight or bias)")
    if field == "weight":
        return node, 1
    if node.op_type != "MatMul":
        return node, 2
    readers = [n for n in model.graph.node if node.output[0] in n.input]
    if len(readers) == 1 and readers[0].op_type == "Add":
        add = readers[0]
        other = [i for i, name in enumerate(add.input) if name != node.output[0]]
        if other and _value(model, add.input[other[0]]) is not None:
            return add, other[0]
    raise SkipEdit(f"MatMul {node.name!r} has no bias (no Add of a constant after it); insert one")


def _unique(model: onnx.ModelProto, base: str) -> str:
    taken = {i.name for i in model.graph.initializer}
    taken |= {t for n in model.graph.node for t in (*n.input, *n.output)}
    taken |= {v.name for v in (*model.graph.input, *model.graph.output)}
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


# -- edits -----------------------------------------------------------------------------------


def _set_input_constant(
    model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, base: str
) -> None:
    """Make input ``index`` of ``node`` a constant holding ``value`` (in the element type the
    node sees there): in place when the initializer is this node's alone, else a new one."""
    name = node.input[index] if index < len(node.input) else ""
    dtype = onnx.TensorProto.FLOAT if not name else _elem_type(model, name)
    array = np.asarray(value).astype(helper.tensor_dtype_to_np_dtype(dtype))
    init = _initializer(model, name) if name else None
    listed = {i.name for i in model.graph.input}
    if init is not None and _uses(model, name) == 1 and name not in listed:
        init.CopyFrom(numpy_helper.from_array(array, name))
        return
    new = _unique(model, base)
    model.graph.initializer.append(numpy_helper.from_array(array, new))
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = new
    if name:
        _prune(model, name)


def _set_tensor(
    model: onnx.ModelProto, node: onnx.NodeProto, field: str, value: np.ndarray
) -> bool:
    """Set a weight/bias; True when its shape changed (declared shapes must follow)."""
    holder, index = _tensor_slot(model, node, field)
    name = holder.input[index] if index < len(holder.input) else ""
    old = _value(model, name) if name else None
    if old is None and name:
        raise SkipEdit(f"input {index} of {holder.name!r} ({name}) is not a constant")
    _set_input_constant(model, holder, index, value, f"{node.name or node.output[0]}.{field}")
    return old is None or old.shape != value.shape


def _set_attr(model: onnx.ModelProto, node: onnx.NodeProto, field: str, value: Any) -> None:
    if field in ("clip_min", "clip_max"):
        _set_clip(model, node, field, value)
        return
    if field not in ATTRS:
        raise SkipEdit(f"the ONNX applier does not set {field!r} (an ONNX activation is a node)")
    name, ops, kind = ATTRS[field]
    if node.op_type not in ops:
        raise SkipEdit(f"{node.op_type} {node.name!r} has no {field} ({name}) attribute")
    old = next((a for a in node.attribute if a.name == name), None)
    if kind == "ints":
        if isinstance(value, (int, float)):  # one number for every spatial axis
            count = len(old.ints) if old is not None and old.ints else 2
            value = [value] * (count * 2 if field == "pads" else count)
        value = [int(v) for v in value]
    elif kind == "int":
        value = int(value)
    elif kind == "str":
        value = ONNX_NAMES.get(field, {}).get(str(value), str(value))
    else:
        value = float(value)
    _put_attr(node, name, value)
    if field == "pads":
        auto = next((a for a in node.attribute if a.name == "auto_pad"), None)
        if auto is not None:
            _put_attr(node, "auto_pad", "NOTSET")


def _put_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    """Replace attribute ``name`` keeping the others' order (deterministic output)."""
    new = helper.make_attribute(name, value)
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            node.attribute[i].CopyFrom(new)
            return
    node.attribute.append(new)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _set_clip(model: onnx.ModelProto, node: onnx.NodeProto, field: str, value: Any) -> None:
    """Clip bounds: inputs 1 (min) and 2 (max) from opset 11, attributes before."""
    if node.op_type != "Clip":
        raise SkipEdit(f"{node.op_type} {node.name!r} is not a Clip: it has no {field}")
    if _opset(model) < 11:
        _put_attr(node, field.removeprefix("clip_"), float(value))
        return
    index = 1 if field == "clip_min" else 2
    _set_input_constant(
        model, node, index, np.array(value), f"{node.name or node.output[0]}.{field}"
    )


def _remove_node(model: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """Drop a single-input node; its consumers read its input instead."""
    data_inputs = [i for i in node.input[1:] if i and _value(model, i) is None]
    if not node.input or not node.input[0] or data_inputs:
        raise SkipEdit(f"{node.op_type} {node.name!r} has more than one data input")
    if any(_uses(model, o) for o in node.output[1:] if o):
        raise SkipEdit(f"{node.op_type} {node.name!r} has other outputs that are read")
    src, dst = node.input[0], node.output[0]
    graph = model.graph
    if any(o.name == dst for o in graph.output):
        producer = _producer(model, src)
        if producer is None or any(o.name == src for o in graph.output):
            raise SkipEdit(f"{node.name!r} joins a graph input or output to the graph's output")
        # the graph's output keeps its name: the producer now writes it directly
        producer.output[list(producer.output).index(src)] = dst
        _rename_reads(model, src, dst)
    else:
        _rename_reads(model, dst, src)
    for i, vi in enumerate(graph.value_info):
        if vi.name == dst:
            del graph.value_info[i]
            break
    constants = [i for i in node.input[1:] if i]
    graph.node.remove(node)
    for name in constants:
        _prune(model, name)


def _insert_node(model: onnx.ModelProto, after: onnx.NodeProto, op: str, value: Any) -> None:
    """A new single-input node reading ``after``'s first output; its readers read the new
    node's output instead. Named as the source names it (``value["name"]``)."""
    if op not in INSERT_OPS:
        raise SkipEdit(f"the ONNX applier does not insert a {op}")
    value = value if isinstance(value, dict) else {}
    attrs = value.get("attrs") or {}
    after = _end_of(model, after, value.get("folded") or [])
    out = after.output[0]
    if any(o.name == out for o in model.graph.output):
        raise SkipEdit(f"{after.name!r} writes the graph's output; insert after another node")
    names = {n.name for n in model.graph.node}
    name = str(value.get("name") or f"{after.name}_{op}")
    name = name if name not in names else _fresh(names, name)
    taken = _tensor_names(model)
    new_out = _fresh(taken, f"{name}_output")
    taken.add(new_out)
    inputs, kwargs = [out], {}
    if op in ("relu6", "clip"):
        low, high = (0.0, 6.0) if op == "relu6" else (attrs.get("min"), attrs.get("max"))
        if low is None or high is None:
            raise SkipEdit(f"the {op} to insert has no bounds")
        if _opset(model) < 11:
            kwargs = {"min": float(low), "max": float(high)}
        else:
            for bound, field in ((low, "min"), (high, "max")):
                tensor = _fresh(taken, f"{name}.{field}")
                taken.add(tensor)
                model.graph.initializer.append(
                    numpy_helper.from_array(np.array(bound, dtype=np.float32), tensor)
                )
                inputs.append(tensor)
    elif op == "softmax":
        kwargs = {"axis": int(attrs.get("axis", -1))}
    _rename_reads(model, out, new_out)
    node = helper.make_node(INSERT_OPS[op], inputs, [new_out], name, **kwargs)
    model.graph.node.insert(list(model.graph.node).index(after) + 1, node)


def _move_node(model: onnx.ModelProto, node: onnx.NodeProto, value: Any) -> None:
    """Take a single-input node out of its place (its readers read its input) and put it
    after ``value["after"]`` (it reads that node's first output; that output's readers now
    read the moved node's)."""
    value = value if isinstance(value, dict) else {"after": value}
    after = _end_of(model, _find(model, str(value.get("after"))), value.get("folded") or [])
    data_inputs = [i for i in node.input[1:] if i and _value(model, i) is None]
    if not node.input or not node.input[0] or data_inputs or len(node.output) != 1:
        raise SkipEdit(f"{node.op_type} {node.name!r} is not a single-input, single-output node")
    src, out, target = node.input[0], node.output[0], after.output[0]
    if node is after or src == target:
        raise SkipEdit(f"{node.name!r} already follows {after.name!r}")
    if any(o.name in (out, target) for o in model.graph.output):
        raise SkipEdit("moving a node that writes or reads the graph's output is not written")
    before = onnx.GraphProto()
    before.CopyFrom(model.graph)  # a refused edit leaves the model as it was
    _rename_reads(model, out, src)  # out of its place
    _rename_reads(model, target, out)  # into the new one
    node.input[0] = target
    try:
        _topological_order(model)
    except SkipEdit:
        model.graph.CopyFrom(before)
        raise
    for i, vi in enumerate(model.graph.value_info):
        if vi.name == out:  # its shape is where it now stands
            del model.graph.value_info[i]
            break


FOLDED_NODES = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "batch_norm": "BatchNormalization",
}


def _end_of(model: onnx.ModelProto, node: onnx.NodeProto, folded: list[str]) -> onnx.NodeProto:
    """The last node of a layer: ``node``, or past the nodes of ``folded`` (canonical ops the
    localizer folded into the layer, in order) that follow it as separate nodes with constant
    other inputs; a folded op that is part of ``node`` itself (a Conv's bias) has none."""
    for op in folded:
        readers = [n for n in model.graph.node if node.output[0] in n.input]
        if len(readers) != 1 or readers[0].op_type != FOLDED_NODES.get(op):
            continue
        others = [i for i in readers[0].input if i and i != node.output[0]]
        if all(_value(model, i) is not None for i in others):
            node = readers[0]
    return node


def _topological_order(model: onnx.ModelProto) -> None:
    """Re-sort the nodes so each follows its inputs' producers, else keeping the file's order
    (ONNX requires it; a moved node may now read a node written after it)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        node = next((n for n in pending if all(i in ready for i in n.input)), None)
        if node is None:
            raise SkipEdit("the nodes cannot be ordered after the move (an input no node writes)")
        pending.remove(node)
        ordered.append(node)
        ready.update(node.output)
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def _tensor_names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    names = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    return names | {o for n in graph.node for o in n.output}


def _fresh(taken: set[str], name: str) -> str:
    """``name``, or ``name_<k>`` for the first k not taken."""
    k = 1
    fresh = name
    while fresh in taken:
        fresh, k = f"{name}_{k}", k + 1
    return fresh


def _rename_reads(model: onnx.ModelProto, old: str, new: str) -> None:
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def _prune(model: onnx.ModelProto, name: str) -> None:
    """Remove the initializer or producer chain of ``name`` once nothing reads it."""
    if _uses(model, name):
        return
    init = _initializer(model, name)
    if init is not None:
        if name not in {i.name for i in model.graph.input}:
            model.graph.initializer.remove(init)
        return
    node = _producer(model, name)
    if node is None or any(_uses(model, o) for o in node.output if o):
        return
    model.graph.node.remove(node)
    for i in node.input:
        if i:
            _prune(model, i)


def _refresh_shapes(model: onnx.ModelProto) -> None:
    """After a weight changed shape: drop the stale intermediate shapes and set each graph
    output's declared shape to what shape inference now derives (cleared when unknown)."""
    graph = model.graph
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model)
    for out in graph.output:
        new = next((o for o in inferred.graph.output if o.name == out.name), None)
        if new is not None and new.type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)
