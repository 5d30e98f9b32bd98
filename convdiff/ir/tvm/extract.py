"""Reading a Relax module into convdiff's raw :class:`CanonicalGraph` (not yet canonicalized).

Every binding of ``main`` becomes a :class:`Layer` in *logical NCHW* terms
(:mod:`convdiff.ir.tvm.builder`): a ``permute_dims`` that only changes layout becomes an
``identity`` (noise), while a layout-sensitive op (conv, pool) fed a tensor in the wrong layout
gets an explicit logical ``transpose`` layer -- a real change of meaning. Constant
sub-expressions (weight transposes, bias reshapes, Clip's isnan/where) are folded with numpy, so
params appear in one layout. Each remaining call goes to its op's converter
(:mod:`convdiff.ir.tvm.ops`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convdiff.ir.graph import CanonicalGraph, Layer
from convdiff.ir.tvm import ops
from convdiff.ir.tvm.builder import (
    NCHW,
    GraphBuilder,
    OpCall,
    Value,
    flat,
    identity_perm,
    layout_perm,
    logical_shape,
    py,
    shape_of,
    var_name,
)

# call_tir PrimFunc (without TVM's numbering) -> the layer kind of the elementwise op it is
_PRIM_BINARY = {"maximum": "maximum", "minimum": "minimum", "add": "add", "multiply": "mul"}


def extract(mod: Any, meta: dict[str, Any] | None = None) -> CanonicalGraph:
    """Read ``mod["main"]`` into a layer graph (logical NCHW, params in one layout)."""
    return Extractor(mod).run(meta or {})


class Extractor:
    """Walks ``main``'s bindings once, keeping the value each Relax var stands for; the layers
    go to :attr:`graph`, whose ``tensors`` say which Relax var holds each layer's output."""

    def __init__(self, mod: Any) -> None:
        self.mod = mod
        self.func = mod["main"]
        self.env: dict[Any, Any] = {}  # relax Var -> np.ndarray | Value | list of them
        self.graph = GraphBuilder()

    def run(self, meta: dict[str, Any]) -> CanonicalGraph:
        """The graph of ``main``: its params are the inputs, its result the outputs."""
        from tvm import relax

        bindings = [b for block in self.func.body.blocks for b in block.bindings]
        inputs = [self._input(param, bindings) for param in self.func.params]
        for binding in bindings:
            # a MatchCast binds its value as a VarBinding does, a shape asserted on top
            if not isinstance(binding, relax.VarBinding | relax.MatchCast):
                raise ValueError(f"unsupported binding {type(binding).__name__}")
            self.env[binding.var] = self._bind(binding.var, binding.value)
        result = self._resolve(self.func.body.body)
        results = result if isinstance(result, list) else [result]
        outputs = [r.layer for r in results if isinstance(r, Value)]
        return CanonicalGraph(self.graph.layers, inputs, outputs, dict(meta))

    def _input(self, param: Any, bindings: list[Any]) -> str:
        """The ``input`` layer of one param of ``main``; its id."""
        shape = shape_of(param.ty)
        perm = self._input_perm(param, bindings) if len(shape) == 4 else identity_perm(len(shape))
        layer = Layer(var_name(param), "input", shape=logical_shape(shape, perm), source="param")
        lid = self.graph.add(layer)
        self.env[param] = Value(lid, shape, perm)
        self.graph.tensors[lid] = (param, perm)
        return lid

    def _input_perm(self, param: Any, bindings: list[Any]) -> tuple[int, ...]:
        """The layout of a 4-D input: follow it to the first layout-sensitive op."""
        from tvm import relax

        current, q = param, list(range(4))
        for binding in bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not any(a.same_as(current) for a in value.args):
                continue
            name = getattr(value.op, "name", "")
            if name == "relax.permute_dims":
                axes = py(value.attrs.axes) if value.attrs.axes is not None else [3, 2, 1, 0]
                q, current = [q[a] for a in axes], binding.var
            elif name in ("relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
                attrs = value.attrs
                layout = str(getattr(attrs, "data_layout", None) or attrs.layout)
                required = layout_perm(layout)
                p = [0] * 4
                for i in range(4):
                    p[q[i]] = required[i]
                return tuple(p)
            elif name in ops.UNARY or name in ops.BINARY or name in ("relax.clip", "relax.nn.pad"):
                current = binding.var  # keeps the axes' meaning (TFLite ResNet101 pads first)
            else:
                break
        return NCHW

    def _resolve(self, expr: Any) -> Any:
        """A Relax argument as the extractor's value: ndarray, :class:`Value` or a list."""
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, Constant):  # tensors and scalars alike in TVM 0.27
            value = expr.value
            return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        if isinstance(expr, relax.Var):
            if expr in self.env:
                return self.env[expr]
            # TVM 0.27 has one Var class: a var no binding defines is a symbolic dimension of
            # main's signature (the dynamic batch ``s77``) passed to an op, read as its name
            # (``slice_scatter(x, src, 0, s77, 1)`` was "KeyError: s77")
            return var_name(expr)
        if isinstance(expr, relax.Tuple):
            return [self._resolve(f) for f in expr.fields]
        if isinstance(expr, relax.ShapeExpr):
            return [py(v) for v in expr.values]
        raise ValueError(f"unsupported expression {type(expr).__name__}")

    def _bind(self, var: Any, value: Any) -> Any:
        """What ``var = value`` stands for: a folded constant, a layer's value, or a list."""
        from tvm import relax

        if isinstance(value, relax.TupleGetItem):
            tup = self._resolve(value.tuple_value)
            if not isinstance(tup, list):
                return tup
            item = tup[value.index]
            if isinstance(item, Value):  # the field's tensor is this var, not the tuple's
                held = self.graph.tensors.get(item.layer)
                if held is not None and held[0].same_as(value.tuple_value):
                    self.graph.tensors[item.layer] = (var, held[1])
            return item
        if not isinstance(value, relax.Call):
            return self._resolve(value)
        if isinstance(value.op, relax.ExternFunc) or not hasattr(value.op, "name"):
            return self._call_tir_or_other(var, value)
        if value.op.name == "relax.call_tir":
            return self._call_tir_or_other(var, value)
        op = OpCall(var, value.op.name, value.attrs, [self._resolve(a) for a in value.args])
        if all(not isinstance(a, Value) for a in flat(op.args)):
            folded = _fold(op)
            if folded is not None:
                return folded
        return ops.convert(self.graph, op)

    def _call_tir_or_other(self, var: Any, call: Any) -> Any:
        """``call_tir`` of a PrimFunc that is a plain elementwise op (ONNX Clip gives these)."""
        gv, tir_args = call.args[0], call.args[1]
        args = self._resolve(tir_args)
        # TVM numbers PrimFuncs that differ in shape: maximum, maximum1, maximum7, ...
        fname = var_name(gv).rstrip("0123456789")
        op = OpCall(var, f"call_tir {fname}", None, args)
        if fname in _PRIM_BINARY and len(args) == 2:
            if all(not isinstance(a, Value) for a in args):
                return _FOLD_BINARY[f"relax.{fname}"](args[0], args[1])
            return ops.binary(self.graph, op, _PRIM_BINARY[fname])
        return self.graph.other(op)


# -- constant folding --------------------------------------------------------------------------

_FOLD_UNARY = {
    "relax.sqrt": np.sqrt,
    "relax.rsqrt": lambda a: 1.0 / np.sqrt(a),
    "relax.negative": np.negative,
    "relax.isnan": np.isnan,
    "relax.exp": np.exp,
}
_FOLD_BINARY = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
    "relax.power": np.power,
}


def _fold(op: OpCall) -> np.ndarray | None:
    """Evaluate an op on constants with numpy (weight transposes, bias reshapes, ...)."""
    name, args = op.name, op.args
    if name in _FOLD_UNARY:
        return _FOLD_UNARY[name](args[0])
    if name in _FOLD_BINARY:
        return _FOLD_BINARY[name](args[0], args[1])
    if name == "relax.where":
        return np.where(args[0], args[1], args[2])
    if name == "relax.permute_dims":
        axes = py(op.attrs.axes) if op.attrs.axes is not None else None
        return np.transpose(args[0], axes)
    if name in ops.SHAPE_OPS:
        shape = shape_of(op.var.ty)
        if any(d < 0 for d in shape):
            return None
        return np.reshape(args[0], shape)
    if name == "relax.astype":
        return np.asarray(args[0]).astype(str(op.attrs.dtype))
    return None
