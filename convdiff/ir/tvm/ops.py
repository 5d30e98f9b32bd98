"""One converter per Relax op family, in a registry like onnx2torch's node converters.

:data:`CONVERTERS` is a plain dict from a Relax op name to a small function that adds the
layer(s) the op becomes to a :class:`~convdiff.ir.tvm.builder.GraphBuilder`, filled by the
:func:`converts` decorator. A name registered twice is an error, raised when the second
function is defined: which converter won would otherwise depend on the order of definition.
An op without a converter becomes an ``other`` layer that keeps its Relax name in
``attrs["tvm_op"]`` (:meth:`GraphBuilder.other`). Adding an op = adding one decorated
function here; the walker (:mod:`convdiff.ir.tvm.extract`) does not change.

Importing this module imports no TVM (the converters read attributes of the objects they are
given), so tests can read the registry in the orchestrating process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convdiff.ir.tvm.builder import (
    GraphBuilder,
    OpCall,
    Value,
    identity_perm,
    layout_perm,
    logical_shape,
    pads4,
    py,
    shape_of,
)

OpConverter = Callable[[GraphBuilder, OpCall], Any]


@dataclass(frozen=True)
class Converter:
    """A registered converter; ``tensor_input``: it applies only when the first argument is a
    tensor of the graph (not a constant), else the op is an ``other`` layer."""

    convert: OpConverter
    tensor_input: bool


CONVERTERS: dict[str, Converter] = {}


def converts(*names: str, tensor_input: bool = False) -> Callable[[OpConverter], OpConverter]:
    """Register the decorated function as the converter of the Relax ops ``names``.

    Raises ValueError, registering none of ``names``, if one of them already has a converter
    (or is named twice)."""

    def register(func: OpConverter) -> OpConverter:
        taken = [n for i, n in enumerate(names) if n in CONVERTERS or n in names[:i]]
        if taken:
            raise ValueError(f"{func.__name__}: {', '.join(taken)} already has a converter")
        for name in names:
            CONVERTERS[name] = Converter(func, tensor_input)
        return func

    return register


def convert(graph: GraphBuilder, op: OpCall) -> Any:
    """Add what ``op`` becomes to ``graph`` through its registered converter, or as an
    ``other`` layer; the op's value (a :class:`Value`, or a list for a tuple)."""
    converter = CONVERTERS.get(op.name)
    if converter is None or (converter.tensor_input and not isinstance(op.x, Value)):
        return graph.other(op)
    return converter.convert(graph, op)


# -- the converters, one per op family -------------------------------------------------------


def _data_in(graph: GraphBuilder, op: OpCall, layout: Any) -> Value:
    """A layout-sensitive op's data input, read in the logical axes its ``layout`` assumes."""
    return graph.to_perm(op.x, layout_perm(str(layout)), op.var)


def _out_perm(layout: Any, out_layout: Any) -> tuple[int, ...]:
    """The perm of a layout-sensitive op's output (``out_layout``, empty: ``layout``)."""
    return layout_perm(str(out_layout or layout))


# Relax elementwise op -> the layer kind
BINARY = {
    "relax.add": "add",
    "relax.subtract": "sub",
    "relax.multiply": "mul",
    "relax.divide": "div",
    "relax.maximum": "maximum",
    "relax.minimum": "minimum",
}
# Relax activation -> the layer kind
UNARY = {
    "relax.nn.relu": "relu",
    "relax.nn.relu6": "relu6",
    "relax.sigmoid": "sigmoid",
    "relax.tanh": "tanh",
}
# ops that only reshape: noise, a flatten, or a real reshape
SHAPE_OPS = ("relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten")


@converts("relax.permute_dims", tensor_input=True)
def _permute_dims(graph: GraphBuilder, op: OpCall) -> Value:
    """A transpose only relabels axes: an ``identity`` whose output carries the new perm."""
    x = op.x
    axes = py(op.attrs.axes) if op.attrs.axes is not None else list(range(len(x.shape)))[::-1]
    perm = tuple(x.perm[a] for a in axes)
    return graph.layer(op, "identity", [x], perm, {"tvm_op": "permute_dims"})


@converts("relax.nn.conv2d")
def _conv(graph: GraphBuilder, op: OpCall) -> Value:
    """Conv2D with its weight in OIHW (a weight computed at run time stays an input)."""
    attrs, weight = op.attrs, op.args[1]
    x = _data_in(graph, op, attrs.data_layout)
    out_perm = _out_perm(attrs.data_layout, attrs.out_layout)
    params: dict[str, np.ndarray] = {}
    if isinstance(weight, np.ndarray):
        kernel_layout = str(attrs.kernel_layout)
        params["weight"] = weight.transpose([kernel_layout.index(c) for c in "OIHW"])
    attrs_out = {
        "strides": py(attrs.strides),
        "pads": pads4(py(attrs.padding)),
        "dilation": py(attrs.dilation),
        "groups": int(attrs.groups),
    }
    if "weight" in params:
        attrs_out["kernel"] = list(params["weight"].shape[2:])
    inputs = [x] if isinstance(weight, np.ndarray) else [x, weight]
    return graph.layer(op, "conv2d", inputs, out_perm, attrs_out, params)


@converts("relax.nn.max_pool2d", "relax.nn.avg_pool2d")
def _pool(graph: GraphBuilder, op: OpCall) -> Value:
    """Max and average pooling; ``count_include_pad`` for the average only."""
    attrs = op.attrs
    x = _data_in(graph, op, attrs.layout)
    out = _out_perm(attrs.layout, attrs.out_layout)
    kind = "pool_max" if "max" in op.name else "pool_avg"
    attrs_out = {
        "kernel": py(attrs.pool_size),
        "strides": py(attrs.strides),
        "pads": pads4(py(attrs.padding)),
        "dilation": py(attrs.dilation),
        "ceil_mode": bool(attrs.ceil_mode),
    }
    if kind == "pool_avg":
        attrs_out["count_include_pad"] = bool(attrs.count_include_pad)
    return graph.layer(op, kind, [x], out, attrs_out)


@converts("relax.nn.adaptive_avg_pool2d")
def _adaptive_avg_pool(graph: GraphBuilder, op: OpCall) -> Value:
    """A global average pool when the output is 1x1; any other size is ``other``."""
    attrs = op.attrs
    x = _data_in(graph, op, attrs.layout)
    if py(attrs.output_size) not in ([1, 1], [1], 1):
        return graph.other(op)
    out = _out_perm(attrs.layout, attrs.out_layout)
    return graph.layer(op, "pool_global_avg", [x], out, {"keepdims": True})


@converts("relax.mean", tensor_input=True)
def _mean(graph: GraphBuilder, op: OpCall) -> Value:
    """A mean over logical axes; over the spatial axes of a 4-D tensor, a global average
    pool."""
    x, attrs = op.x, op.attrs
    ndim = len(x.shape)
    axes = py(attrs.axis) if attrs.axis is not None else list(range(ndim))
    axes = sorted(a % ndim for a in axes)
    logical_axes = sorted(x.perm[a] for a in axes)
    keep = bool(attrs.keepdims)
    if keep:
        perm = x.perm
    else:
        kept = [x.perm[i] for i in range(ndim) if i not in axes]
        perm = tuple(int(r) for r in np.argsort(np.argsort(kept)))
    if ndim == 4 and logical_axes == [2, 3]:
        return graph.layer(op, "pool_global_avg", [x], perm, {"keepdims": keep})
    return graph.layer(op, "mean", [x], perm, {"axes": logical_axes, "keepdims": keep})


@converts(*SHAPE_OPS, tensor_input=True)
def _reshape(graph: GraphBuilder, op: OpCall) -> Value:
    """Reshape-like ops: noise when only unit axes move, ``flatten`` for 4-D -> [N, -1]."""
    x, out = op.x, shape_of(op.var.ty)
    src = x.shape
    tvm_op = op.name.split(".")[-1]
    if [d for d in src if d != 1] == [d for d in out if d != 1]:
        perm = x.perm if len(out) == len(src) else identity_perm(len(out))
        attrs = {"tvm_op": tvm_op, "noise": True, "shape": out}
        return graph.layer(op, "reshape", [x], perm, attrs)
    if len(src) == 4 and len(out) == 2 and out[0] == src[0]:
        order = [x.perm[i] for i in range(1, 4)]
        return graph.layer(op, "flatten", [x], (0, 1), {"order": order})
    attrs = {"tvm_op": tvm_op, "noise": False, "shape": out}
    return graph.layer(op, "reshape", [x], identity_perm(len(out)), attrs)


@converts(*BINARY)
def _elementwise(graph: GraphBuilder, op: OpCall) -> Value:
    """add, sub, mul, div, maximum, minimum, of two tensors or of a tensor and a constant."""
    return binary(graph, op, BINARY[op.name])


def binary(graph: GraphBuilder, op: OpCall, kind: str) -> Value:
    """A binary layer; a constant operand becomes the param ``const``, in the tensor's logical
    layout (``const_first`` when it came first), and a second tensor in another layout is read
    in the first one's."""
    a, b = op.args[0], op.args[1]
    if isinstance(a, Value) and isinstance(b, Value):
        if a.perm != b.perm and len(a.perm) == len(b.perm):
            b = graph.to_perm(b, a.perm, op.var)
        return graph.layer(op, kind, [a, b], a.perm)
    value, const = (a, b) if isinstance(a, Value) else (b, a)
    attrs = {} if isinstance(a, Value) else {"const_first": True}
    ndim = len(value.shape)
    c = np.asarray(const, dtype=np.float32)
    c = c.reshape((1,) * (ndim - c.ndim) + c.shape) if c.ndim < ndim else c
    if c.ndim == ndim and ndim > 1:
        c = c.transpose(np.argsort(value.perm))
    return graph.layer(op, kind, [value], value.perm, attrs, {"const": c})


@converts(*UNARY)
def _activation(graph: GraphBuilder, op: OpCall) -> Value:
    """relu, relu6, sigmoid, tanh: the layer kind names the function."""
    return graph.layer(op, UNARY[op.name], [op.x], op.x.perm)


@converts("relax.clip")
def _clip(graph: GraphBuilder, op: OpCall) -> Value:
    """Clip with its bounds as floats (ReLU6 is one, once canonicalized)."""
    lo, hi = float(op.args[1]), float(op.args[2])
    return graph.layer(op, "clip", [op.x], op.x.perm, {"min": lo, "max": hi})


@converts("relax.nn.softmax", "relax.nn.log_softmax")
def _softmax(graph: GraphBuilder, op: OpCall) -> Value:
    """Softmax over a logical axis; ``log`` for log_softmax."""
    x = op.x
    axis = py(op.attrs.axis) % len(x.shape)
    attrs_out = {"axis": x.perm[axis], "log": op.name.endswith("log_softmax")}
    return graph.layer(op, "softmax", [x], x.perm, attrs_out)


@converts("relax.nn.batch_norm")
def _batch_norm(graph: GraphBuilder, op: OpCall) -> list[Any]:
    """BatchNorm with gamma, beta, mean and var as params; the Relax op returns
    ``(out, new_mean, new_var)``, so the layer's value is the tuple's field 0."""
    attrs, x = op.attrs, op.x
    axis = py(attrs.axis) % len(x.shape)
    names = ("gamma", "beta", "mean", "var")
    params = dict(zip(names, op.args[1:5], strict=True))
    attrs_out = {
        "epsilon": float(attrs.epsilon),
        "axis": x.perm[axis],
        "center": bool(attrs.center),
        "scale": bool(attrs.scale),
        "training": bool(getattr(attrs, "training", False)),
    }
    # the var is a tuple: its field 0 is the output (what activations read of this layer)
    shape = shape_of(op.var.ty.fields[0])
    value = graph.layer(op, "batch_norm", [x], x.perm, attrs_out, params, shape=shape)
    return [value, params["mean"], params["var"]]


@converts("relax.matmul")
def _matmul(graph: GraphBuilder, op: OpCall) -> Value:
    """A tensor times a constant 2-D weight is ``dense`` (weight ``[out, in]``); else other."""
    x, w = op.args
    if isinstance(x, Value) and isinstance(w, np.ndarray) and w.ndim == 2:
        return graph.layer(op, "dense", [x], x.perm, {"units": int(w.shape[1])}, {"weight": w.T})
    return graph.other(op)


@converts("relax.concat")
def _concat(graph: GraphBuilder, op: OpCall) -> Value:
    """Concat of tensors only, each read in the first one's layout, on a logical axis."""
    parts = op.args[0] if isinstance(op.args[0], list) else op.args
    values = [p for p in parts if isinstance(p, Value)]
    if len(values) != len(parts):
        return graph.other(op)
    first = values[0]
    values = [first] + [graph.to_perm(v, first.perm, op.var) for v in values[1:]]
    axis = py(op.attrs.axis) % len(first.shape)
    return graph.layer(op, "concat", values, first.perm, {"axis": first.perm[axis]})


@converts("relax.nn.pad")
def _pad(graph: GraphBuilder, op: OpCall) -> Value:
    """Pad widths per logical axis; for 4-D also ``pads`` [top, left, bottom, right], which
    canonicalization folds into the next conv or pool."""
    attrs, x = op.attrs, op.x
    width = py(attrs.pad_width)
    ndim = len(x.shape)
    logical = [[0, 0] for _ in range(ndim)]
    for i in range(ndim):
        logical[x.perm[i]] = [width[2 * i], width[2 * i + 1]]
    value = op.args[1] if len(op.args) > 1 else py(getattr(attrs, "pad_value", 0.0))
    attrs_out = {
        "pad_width": logical,
        "value": float(np.asarray(value)),
        "mode": str(attrs.pad_mode),
    }
    if ndim == 4:
        attrs_out["pads"] = [logical[2][0], logical[3][0], logical[2][1], logical[3][1]]
        attrs_out["spatial_only"] = logical[0] == [0, 0] and logical[1] == [0, 0]
    return graph.layer(op, "pad", [x], x.perm, attrs_out)


@converts("relax.image.resize2d", tensor_input=True)
def _resize(graph: GraphBuilder, op: OpCall) -> Value:
    """``resize2d`` with the attributes that change its values, normalized so that equal
    computations compare equal: ``method`` nearest/linear/cubic; ``coordinate_mode``
    (pytorch_half_pixel is half_pixel for outputs larger than 1); ``rounding`` for nearest
    only (TVM's empty default spelled out: round for align_corners, else floor);
    ``cubic_alpha``/``cubic_exclude`` for cubic only; the output ``size`` [H, W] and the
    ``scale`` out/in per axis (what ONNX scales or a TFLite size tensor said)."""
    attrs = op.attrs
    perm = layout_perm(str(attrs.layout))
    x = graph.to_perm(op.x, perm, op.var)
    size = logical_shape(shape_of(op.var.ty), perm)[2:]
    size_in = logical_shape(x.shape, perm)[2:]
    method = {"nearest_neighbor": "nearest"}.get(str(attrs.method), str(attrs.method))
    coord = str(attrs.coordinate_transformation_mode)
    if coord == "pytorch_half_pixel" and all(d > 1 for d in size):
        coord = "half_pixel"
    attrs_out: dict[str, Any] = {"method": method, "coordinate_mode": coord}
    if method == "nearest":
        rounding = str(attrs.rounding_method)
        attrs_out["rounding"] = rounding or ("round" if coord == "align_corners" else "floor")
    if method == "cubic":
        attrs_out["cubic_alpha"] = float(attrs.cubic_alpha)
        attrs_out["cubic_exclude"] = int(attrs.cubic_exclude)
    attrs_out["size"] = size
    attrs_out["scale"] = [
        round(o / i, 6) if o > 0 and i > 0 else -1.0 for o, i in zip(size, size_in, strict=True)
    ]
    return graph.layer(op, "resize", [x], perm, attrs_out)


@converts("relax.astype", tensor_input=True)
def _astype(graph: GraphBuilder, op: OpCall) -> Value:
    """A dtype cast changes no value the comparison sees: an ``identity``."""
    attrs_out = {"tvm_op": "astype", "dtype": str(op.attrs.dtype)}
    return graph.layer(op, "identity", [op.x], op.x.perm, attrs_out)
