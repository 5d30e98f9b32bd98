"""Reading a Relax module into convdiff's raw :class:`CanonicalGraph` (not yet canonicalized).

Every binding of ``main`` becomes a :class:`Layer` in *logical NCHW* terms. Each tensor carries
the permutation from its physical axes to logical ones, so a ``permute_dims`` that only changes
layout becomes an ``identity`` (noise), while a layout-sensitive op (conv, pool) fed a tensor in
the wrong layout gets an explicit logical ``transpose`` layer -- a real change of meaning.
Constant sub-expressions (weight transposes, bias reshapes, Clip's isnan/where) are folded with
numpy, so params appear in one layout.

Op conversion is a registry, as onnx2torch's node converters are: :data:`CONVERTERS` is a plain
dict from a Relax op name to one small function per op family, filled by the :func:`converts`
decorator, which refuses a name registered twice (which converter won would otherwise depend on
the order of definition). An op without a converter becomes an ``other`` layer that keeps its
Relax name in ``attrs["tvm_op"]`` (:meth:`Extractor.other`).

Importing this module imports no TVM: it is only called inside a ``tvm`` worker, and tests can
read the registry without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convdiff.ir.graph import CanonicalGraph, Layer

NCHW = (0, 1, 2, 3)
NHWC = (0, 2, 3, 1)  # physical axis i holds logical axis NHWC[i]


@dataclass
class _Value:
    """A tensor produced by a layer: its layer id, physical shape and physical->logical axes."""

    layer: str
    shape: list[int]
    perm: tuple[int, ...]


@dataclass(frozen=True)
class OpCall:
    """One Relax call being converted: the var it binds, the op's name (or ``call_tir <prim>``),
    its attributes and its arguments resolved (:class:`_Value`, ndarray, or lists of them)."""

    var: Any
    name: str
    attrs: Any
    args: list[Any]

    @property
    def x(self) -> Any:
        """The first argument, the data tensor of most ops."""
        return self.args[0]


OpConverter = Callable[["Extractor", OpCall], Any]


@dataclass(frozen=True)
class Converter:
    """A registered converter; ``tensor_input``: it applies only when the first argument is a
    tensor of the graph (not a constant), else the op is an ``other`` layer."""

    convert: OpConverter
    tensor_input: bool


CONVERTERS: dict[str, Converter] = {}


def converts(*names: str, tensor_input: bool = False) -> Callable[[OpConverter], OpConverter]:
    """Register the decorated function as the converter of the Relax ops ``names``.

    Raises ValueError, registering none of ``names``, if one of them already has a converter."""

    def register(func: OpConverter) -> OpConverter:
        taken = [f"{n} ({CONVERTERS[n].convert.__name__})" for n in names if n in CONVERTERS]
        if taken:
            raise ValueError(f"{func.__name__}: a converter is already registered for {taken}")
        for name in names:
            CONVERTERS[name] = Converter(func, tensor_input)
        return func

    return register


def extract(mod: Any, meta: dict[str, Any] | None = None) -> CanonicalGraph:
    """Read ``mod["main"]`` into a layer graph (logical NCHW, params in one layout)."""
    return Extractor(mod).run(meta or {})


class Extractor:
    """Walks ``main``'s bindings once, keeping the value each Relax var stands for."""

    def __init__(self, mod: Any) -> None:
        self.mod = mod
        self.func = mod["main"]
        self.env: dict[Any, Any] = {}  # relax Var -> np.ndarray | _Value | tuple marker
        self.layers: list[Layer] = []
        self.ids: set[str] = set()
        # layer id -> (the Relax var holding its output, that tensor's physical->logical perm)
        self.tensors: dict[str, tuple[Any, tuple[int, ...]]] = {}

    def run(self, meta: dict[str, Any]) -> CanonicalGraph:
        """The graph of ``main``: its params are the inputs, its result the outputs."""
        from tvm import relax

        bindings = [b for block in self.func.body.blocks for b in block.bindings]
        inputs = []
        for param in self.func.params:
            shape = shape_of(param.ty)
            perm = (
                self._input_perm(param, bindings) if len(shape) == 4 else identity_perm(len(shape))
            )
            lid = self.add(
                Layer(_name(param), "input", shape=_logical(shape, perm), source="param")
            )
            self.env[param] = _Value(lid, shape, perm)
            self.tensors[lid] = (param, perm)
            inputs.append(lid)
        for binding in bindings:
            if not isinstance(binding, relax.VarBinding):
                raise ValueError(f"unsupported binding {type(binding).__name__}")
            self.env[binding.var] = self._bind(binding.var, binding.value)
        result = self.resolve(self.func.body.body)
        results = result if isinstance(result, list) else [result]
        outputs = [r.layer for r in results if isinstance(r, _Value)]
        return CanonicalGraph(self.layers, inputs, outputs, dict(meta))

    # -- helpers the converters share ----------------------------------------------------------

    def add(self, layer: Layer) -> str:
        """Append ``layer`` under a unique id (``<var>_2``, ... on a clash); the id."""
        base, n = layer.id, 1
        while layer.id in self.ids:
            n += 1
            layer.id = f"{base}_{n}"
        layer.tensor = layer.id
        self.ids.add(layer.id)
        self.layers.append(layer)
        return layer.id

    def resolve(self, expr: Any) -> Any:
        """A Relax argument as the extractor's value: ndarray, :class:`_Value` or a list."""
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, Constant):  # tensors and scalars alike in TVM 0.27
            value = expr.value
            return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        if isinstance(expr, relax.Var):
            return self.env[expr]
        if isinstance(expr, relax.Tuple):
            return [self.resolve(f) for f in expr.fields]
        if isinstance(expr, relax.ShapeExpr):
            return [_py(v) for v in expr.values]
        raise ValueError(f"unsupported expression {type(expr).__name__}")

    def to_perm(self, value: _Value, wanted: tuple[int, ...], var: Any) -> _Value:
        """Make a layout-sensitive op's input hold the logical axes it assumes: when it does not,
        the op really reads a transposed tensor, made explicit as a logical ``transpose``."""
        if value.perm == wanted:
            return value
        axes = [0] * len(wanted)
        for i in range(len(wanted)):
            axes[wanted[i]] = value.perm[i]
        logical = _logical(value.shape, wanted)
        lid = self.add(
            Layer(
                f"{_name(var)}_layout",
                "transpose",
                [value.layer],
                {"axes": axes},
                logical,
                source="layout mismatch",
            )
        )
        if value.layer in self.tensors:  # the same data, read in the wanted axis order
            self.tensors[lid] = (self.tensors[value.layer][0], wanted)
        return _Value(lid, value.shape, wanted)

    def layer(
        self,
        op: OpCall,
        kind: str,
        inputs: list[_Value],
        perm: tuple[int, ...],
        attrs: dict[str, Any] | None = None,
        params: dict[str, np.ndarray] | None = None,
    ) -> _Value:
        """Add the layer ``kind`` that ``op`` becomes; its output has axes ``perm``."""
        shape = shape_of(op.var.ty)
        layer = Layer(
            _name(op.var),
            kind,
            [v.layer for v in inputs],
            attrs or {},
            _logical(shape, perm),
            {k: np.asarray(v, dtype=np.float32) for k, v in (params or {}).items()},
            source=f"{op.name} {_name(op.var)}".strip(),
        )
        lid = self.add(layer)
        self.tensors[lid] = (op.var, perm)
        return _Value(lid, shape, perm)

    def other(self, op: OpCall) -> _Value:
        """An op convdiff has no kind for: an ``other`` layer named by its Relax op, its float
        constant arguments kept as params."""
        values = [a for a in _flat(op.args) if isinstance(a, _Value)]
        consts = {f"arg{i}": a for i, a in enumerate(op.args) if isinstance(a, np.ndarray)}
        consts = {k: v for k, v in consts.items() if v.dtype.kind == "f"}
        ndim = len(shape_of(op.var.ty))
        perm = values[0].perm if values and len(values[0].perm) == ndim else identity_perm(ndim)
        return self.layer(op, "other", values, perm, {"tvm_op": op.name}, consts)

    # -- one binding ---------------------------------------------------------------------------

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
                axes = _py(value.attrs.axes) if value.attrs.axes is not None else [3, 2, 1, 0]
                q, current = [q[a] for a in axes], binding.var
            elif name in ("relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
                attrs = value.attrs
                layout = str(getattr(attrs, "data_layout", None) or attrs.layout)
                required = _layout_perm(layout)
                p = [0] * 4
                for i in range(4):
                    p[q[i]] = required[i]
                return tuple(p)
            elif name in _UNARY or name in _BINARY or name in ("relax.clip", "relax.nn.pad"):
                current = binding.var  # keeps the axes' meaning (TFLite ResNet101 pads first)
            else:
                break
        return NCHW

    def _bind(self, var: Any, value: Any) -> Any:
        """What ``var = value`` stands for: a folded constant, a layer's value, or a list."""
        from tvm import relax

        if isinstance(value, relax.TupleGetItem):
            tup = self.resolve(value.tuple_value)
            return tup[value.index] if isinstance(tup, list) else tup
        if not isinstance(value, relax.Call):
            return self.resolve(value)
        if isinstance(value.op, relax.ExternFunc) or not hasattr(value.op, "name"):
            return self._call_tir_or_other(var, value)
        if value.op.name == "relax.call_tir":
            return self._call_tir_or_other(var, value)
        op = OpCall(var, value.op.name, value.attrs, [self.resolve(a) for a in value.args])
        if all(not isinstance(a, _Value) for a in _flat(op.args)):
            folded = _fold(op)
            if folded is not None:
                return folded
        return self._convert(op)

    def _convert(self, op: OpCall) -> Any:
        """``op`` through its registered converter, or an ``other`` layer."""
        converter = CONVERTERS.get(op.name)
        if converter is None or (converter.tensor_input and not isinstance(op.x, _Value)):
            return self.other(op)
        return converter.convert(self, op)

    def _call_tir_or_other(self, var: Any, call: Any) -> Any:
        """``call_tir`` of a PrimFunc that is a plain elementwise op (ONNX Clip gives these)."""
        gv, tir_args = call.args[0], call.args[1]
        args = self.resolve(tir_args)
        # TVM numbers PrimFuncs that differ in shape: maximum, maximum1, maximum7, ...
        fname = _name(gv).rstrip("0123456789")
        op = OpCall(var, f"call_tir {fname}", None, args)
        if fname in _PRIM_BINARY and len(args) == 2:
            if all(not isinstance(a, _Value) for a in args):
                return _FOLD_BINARY[f"relax.{fname}"](args[0], args[1])
            return _binary(self, op, _PRIM_BINARY[fname])
        return self.other(op)


# -- the converters, one per op family -------------------------------------------------------

_BINARY = {
    "relax.add": "add",
    "relax.subtract": "sub",
    "relax.multiply": "mul",
    "relax.divide": "div",
    "relax.maximum": "maximum",
    "relax.minimum": "minimum",
}
_UNARY = {
    "relax.nn.relu": "relu",
    "relax.nn.relu6": "relu6",
    "relax.sigmoid": "sigmoid",
    "relax.tanh": "tanh",
}
_SHAPE_OPS = ("relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten")
_PRIM_BINARY = {"maximum": "maximum", "minimum": "minimum", "add": "add", "multiply": "mul"}


@converts("relax.permute_dims", tensor_input=True)
def _permute_dims(ex: Extractor, op: OpCall) -> _Value:
    """A transpose only relabels axes: an ``identity`` whose output carries the new perm."""
    x = op.x
    axes = _py(op.attrs.axes) if op.attrs.axes is not None else list(range(len(x.shape)))[::-1]
    perm = tuple(x.perm[a] for a in axes)
    return ex.layer(op, "identity", [x], perm, {"tvm_op": "permute_dims"})


@converts("relax.nn.conv2d")
def _conv(ex: Extractor, op: OpCall) -> _Value:
    """Conv2D with its weight in OIHW (a weight computed at run time stays an input)."""
    attrs, weight = op.attrs, op.args[1]
    x = ex.to_perm(op.x, _layout_perm(str(attrs.data_layout)), op.var)
    out_perm = _layout_perm(str(attrs.out_layout or attrs.data_layout))
    params: dict[str, np.ndarray] = {}
    if isinstance(weight, np.ndarray):
        kernel_layout = str(attrs.kernel_layout)
        params["weight"] = weight.transpose([kernel_layout.index(c) for c in "OIHW"])
    attrs_out = {
        "strides": _py(attrs.strides),
        "pads": _pads4(_py(attrs.padding)),
        "dilation": _py(attrs.dilation),
        "groups": int(attrs.groups),
    }
    if "weight" in params:
        attrs_out["kernel"] = list(params["weight"].shape[2:])
    inputs = [x] if isinstance(weight, np.ndarray) else [x, weight]
    return ex.layer(op, "conv2d", inputs, out_perm, attrs_out, params)


@converts("relax.nn.max_pool2d", "relax.nn.avg_pool2d")
def _pool(ex: Extractor, op: OpCall) -> _Value:
    """Max and average pooling; ``count_include_pad`` for the average only."""
    attrs = op.attrs
    x = ex.to_perm(op.x, _layout_perm(str(attrs.layout)), op.var)
    out = _layout_perm(str(attrs.out_layout or attrs.layout))
    kind = "pool_max" if "max" in op.name else "pool_avg"
    attrs_out = {
        "kernel": _py(attrs.pool_size),
        "strides": _py(attrs.strides),
        "pads": _pads4(_py(attrs.padding)),
        "dilation": _py(attrs.dilation),
        "ceil_mode": bool(attrs.ceil_mode),
    }
    if kind == "pool_avg":
        attrs_out["count_include_pad"] = bool(attrs.count_include_pad)
    return ex.layer(op, kind, [x], out, attrs_out)


@converts("relax.nn.adaptive_avg_pool2d")
def _adaptive_avg_pool(ex: Extractor, op: OpCall) -> _Value:
    """A global average pool when the output is 1x1; any other size is ``other``."""
    attrs = op.attrs
    x = ex.to_perm(op.x, _layout_perm(str(attrs.layout)), op.var)
    if _py(attrs.output_size) not in ([1, 1], [1], 1):
        return ex.other(op)
    out = _layout_perm(str(attrs.out_layout or attrs.layout))
    return ex.layer(op, "pool_global_avg", [x], out, {"keepdims": True})


@converts("relax.mean", tensor_input=True)
def _mean(ex: Extractor, op: OpCall) -> _Value:
    """A mean over the logical spatial axes of a 4-D tensor is a global average pool."""
    x, attrs = op.x, op.attrs
    ndim = len(x.shape)
    axes = _py(attrs.axis) if attrs.axis is not None else list(range(ndim))
    axes = sorted(a % ndim for a in axes)
    logical_axes = sorted(x.perm[a] for a in axes)
    keep = bool(attrs.keepdims)
    if keep:
        perm = x.perm
    else:
        kept = [x.perm[i] for i in range(ndim) if i not in axes]
        perm = tuple(int(r) for r in np.argsort(np.argsort(kept)))
    if ndim == 4 and logical_axes == [2, 3]:
        return ex.layer(op, "pool_global_avg", [x], perm, {"keepdims": keep})
    return ex.layer(op, "mean", [x], perm, {"axes": logical_axes, "keepdims": keep})


@converts(*_SHAPE_OPS, tensor_input=True)
def _reshape(ex: Extractor, op: OpCall) -> _Value:
    """Reshape-like ops: noise when only unit axes move, ``flatten`` for 4-D -> [N, -1]."""
    x, out = op.x, shape_of(op.var.ty)
    src = x.shape
    tvm_op = op.name.split(".")[-1]
    if [d for d in src if d != 1] == [d for d in out if d != 1]:
        perm = x.perm if len(out) == len(src) else identity_perm(len(out))
        attrs = {"tvm_op": tvm_op, "noise": True, "shape": out}
        return ex.layer(op, "reshape", [x], perm, attrs)
    if len(src) == 4 and len(out) == 2 and out[0] == src[0]:
        order = [x.perm[i] for i in range(1, 4)]
        return ex.layer(op, "flatten", [x], (0, 1), {"order": order})
    attrs = {"tvm_op": tvm_op, "noise": False, "shape": out}
    return ex.layer(op, "reshape", [x], identity_perm(len(out)), attrs)


@converts(*_BINARY)
def _elementwise(ex: Extractor, op: OpCall) -> _Value:
    """add, sub, mul, div, maximum, minimum, of two tensors or of a tensor and a constant."""
    return _binary(ex, op, _BINARY[op.name])


def _binary(ex: Extractor, op: OpCall, kind: str) -> _Value:
    """A binary layer; a constant operand becomes the param ``const``, in the tensor's logical
    layout (``const_first`` when it came first), and a second tensor in another layout is read
    in the first one's."""
    a, b = op.args[0], op.args[1]
    if isinstance(a, _Value) and isinstance(b, _Value):
        if a.perm != b.perm and len(a.perm) == len(b.perm):
            b = ex.to_perm(b, a.perm, op.var)
        return ex.layer(op, kind, [a, b], a.perm)
    value, const = (a, b) if isinstance(a, _Value) else (b, a)
    attrs = {} if isinstance(a, _Value) else {"const_first": True}
    ndim = len(value.shape)
    c = np.asarray(const, dtype=np.float32)
    c = c.reshape((1,) * (ndim - c.ndim) + c.shape) if c.ndim < ndim else c
    if c.ndim == ndim and ndim > 1:
        c = c.transpose(np.argsort(value.perm))
    return ex.layer(op, kind, [value], value.perm, attrs, {"const": c})


@converts(*_UNARY)
def _activation(ex: Extractor, op: OpCall) -> _Value:
    """relu, relu6, sigmoid, tanh: the layer kind names the function."""
    return ex.layer(op, _UNARY[op.name], [op.x], op.x.perm)


@converts("relax.clip")
def _clip(ex: Extractor, op: OpCall) -> _Value:
    """Clip with its bounds as floats (ReLU6 is one, once canonicalized)."""
    lo, hi = float(op.args[1]), float(op.args[2])
    return ex.layer(op, "clip", [op.x], op.x.perm, {"min": lo, "max": hi})


@converts("relax.nn.softmax", "relax.nn.log_softmax")
def _softmax(ex: Extractor, op: OpCall) -> _Value:
    """Softmax over a logical axis; ``log`` for log_softmax."""
    x = op.x
    axis = _py(op.attrs.axis) % len(x.shape)
    attrs_out = {"axis": x.perm[axis], "log": op.name.endswith("log_softmax")}
    return ex.layer(op, "softmax", [x], x.perm, attrs_out)


@converts("relax.nn.batch_norm")
def _batch_norm(ex: Extractor, op: OpCall) -> list[Any]:
    """BatchNorm with gamma, beta, mean and var as params; the Relax op returns
    ``(out, new_mean, new_var)``, so the layer's value is the tuple's field 0."""
    attrs, x = op.attrs, op.x
    axis = _py(attrs.axis) % len(x.shape)
    names = ("gamma", "beta", "mean", "var")
    params = dict(zip(names, op.args[1:5], strict=True))
    attrs_out = {
        "epsilon": float(attrs.epsilon),
        "axis": x.perm[axis],
        "center": bool(attrs.center),
        "scale": bool(attrs.scale),
        "training": bool(getattr(attrs, "training", False)),
    }
    shape = shape_of(op.var.ty.fields[0])
    layer = Layer(
        _name(op.var),
        "batch_norm",
        [x.layer],
        attrs_out,
        _logical(shape, x.perm),
        {k: np.asarray(v, dtype=np.float32) for k, v in params.items()},
        source=f"{op.name} {_name(op.var)}",
    )
    value = _Value(ex.add(layer), shape, x.perm)
    ex.tensors[value.layer] = (op.var, x.perm)  # a tuple var: its field 0 is the output
    return [value, params["mean"], params["var"]]


@converts("relax.matmul")
def _matmul(ex: Extractor, op: OpCall) -> _Value:
    """A tensor times a constant 2-D weight is ``dense`` (weight ``[out, in]``); else other."""
    x, w = op.args
    if isinstance(x, _Value) and isinstance(w, np.ndarray) and w.ndim == 2:
        return ex.layer(op, "dense", [x], x.perm, {"units": int(w.shape[1])}, {"weight": w.T})
    return ex.other(op)


@converts("relax.concat")
def _concat(ex: Extractor, op: OpCall) -> _Value:
    """Concat of tensors only, each read in the first one's layout, on a logical axis."""
    parts = op.args[0] if isinstance(op.args[0], list) else op.args
    values = [p for p in parts if isinstance(p, _Value)]
    if len(values) != len(parts):
        return ex.other(op)
    first = values[0]
    values = [first] + [ex.to_perm(v, first.perm, op.var) for v in values[1:]]
    axis = _py(op.attrs.axis) % len(first.shape)
    return ex.layer(op, "concat", values, first.perm, {"axis": first.perm[axis]})


@converts("relax.nn.pad")
def _pad(ex: Extractor, op: OpCall) -> _Value:
    """Pad widths per logical axis; for 4-D also ``pads`` [top, left, bottom, right], which
    canonicalization folds into the next conv or pool."""
    attrs, x = op.attrs, op.x
    width = _py(attrs.pad_width)
    ndim = len(x.shape)
    logical = [[0, 0] for _ in range(ndim)]
    for i in range(ndim):
        logical[x.perm[i]] = [width[2 * i], width[2 * i + 1]]
    value = op.args[1] if len(op.args) > 1 else _py(getattr(attrs, "pad_value", 0.0))
    attrs_out = {
        "pad_width": logical,
        "value": float(np.asarray(value)),
        "mode": str(attrs.pad_mode),
    }
    if ndim == 4:
        attrs_out["pads"] = [logical[2][0], logical[3][0], logical[2][1], logical[3][1]]
        attrs_out["spatial_only"] = logical[0] == [0, 0] and logical[1] == [0, 0]
    return ex.layer(op, "pad", [x], x.perm, attrs_out)


@converts("relax.image.resize2d", tensor_input=True)
def _resize(ex: Extractor, op: OpCall) -> _Value:
    """``resize2d`` with the attributes that change its values, normalized so that equal
    computations compare equal: ``method`` nearest/linear/cubic; ``coordinate_mode``
    (pytorch_half_pixel is half_pixel for outputs larger than 1); ``rounding`` for nearest
    only (TVM's empty default spelled out: round for align_corners, else floor);
    ``cubic_alpha``/``cubic_exclude`` for cubic only; the output ``size`` [H, W] and the
    ``scale`` out/in per axis (what ONNX scales or a TFLite size tensor said)."""
    attrs = op.attrs
    perm = _layout_perm(str(attrs.layout))
    x = ex.to_perm(op.x, perm, op.var)
    size = _logical(shape_of(op.var.ty), perm)[2:]
    size_in = _logical(x.shape, perm)[2:]
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
    return ex.layer(op, "resize", [x], perm, attrs_out)


@converts("relax.astype", tensor_input=True)
def _astype(ex: Extractor, op: OpCall) -> _Value:
    """A dtype cast changes no value the comparison sees: an ``identity``."""
    attrs_out = {"tvm_op": "astype", "dtype": str(op.attrs.dtype)}
    return ex.layer(op, "identity", [op.x], op.x.perm, attrs_out)


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
        axes = _py(op.attrs.axes) if op.attrs.axes is not None else None
        return np.transpose(args[0], axes)
    if name in _SHAPE_OPS:
        shape = shape_of(op.var.ty)
        if any(d < 0 for d in shape):
            return None
        return np.reshape(args[0], shape)
    if name == "relax.astype":
        return np.asarray(args[0]).astype(str(op.attrs.dtype))
    return None


# -- small conversions -------------------------------------------------------------------------


def shape_of(struct_info: Any) -> list[int]:
    """A tensor's static shape from its struct info, -1 for a symbolic dimension."""
    shape = getattr(struct_info, "shape", None)
    values = getattr(shape, "values", None)
    if values is None:
        return []
    return [int(v) if hasattr(v, "value") else -1 for v in values]


def identity_perm(n: int) -> tuple[int, ...]:
    """The axes of an ``n``-D tensor whose physical order is its logical one."""
    return tuple(range(n))


def _py(value: Any) -> Any:
    """TVM attribute values (Array, IntImm, FloatImm, String) as plain Python."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value") and not hasattr(value, "__len__"):
        return value.value
    try:
        return [_py(v) for v in value]
    except TypeError:
        return str(value)


def _flat(args: list[Any]) -> list[Any]:
    """Arguments with nested lists (Relax tuples) flattened."""
    out = []
    for a in args:
        out.extend(_flat(a) if isinstance(a, list) else [a])
    return out


def _layout_perm(layout: str) -> tuple[int, ...]:
    """The perm of a Relax layout string (NCHW or NHWC)."""
    if layout == "NCHW":
        return NCHW
    if layout == "NHWC":
        return NHWC
    raise ValueError(f"unsupported layout {layout!r}")


def _logical(shape: list[int], perm: tuple[int, ...]) -> list[int]:
    """The logical shape of a tensor whose physical axis i holds logical axis perm[i]."""
    if len(perm) != len(shape):
        return list(shape)
    logical = [0] * len(shape)
    for i, label in enumerate(perm):
        logical[label] = shape[i]
    return logical


def _pads4(padding: list[int]) -> list[int]:
    """Relax padding of 1, 2 or 4 values as [top, left, bottom, right]."""
    if len(padding) == 1:
        return padding * 4
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    return list(padding)


def _name(var: Any) -> str:
    """A Relax Var's or GlobalVar's name (``name`` in TVM 0.27, ``name_hint`` before)."""
    name = getattr(var, "name_hint", None) or getattr(var, "name", None)
    return str(name) if name is not None else ""
