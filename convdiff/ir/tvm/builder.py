"""The layer graph under construction while a Relax module is read, and the small helpers that
turn TVM values into plain Python.

Layers are in *logical NCHW* terms: each tensor (:class:`Value`) carries the permutation from
its physical axes to logical ones, so an op that only changes layout can be noise while a
layout-sensitive op fed a tensor in the wrong layout gets an explicit logical ``transpose``
(:meth:`GraphBuilder.to_perm`). Shared by the walker (:mod:`convdiff.ir.tvm.extract`) and the
op converters (:mod:`convdiff.ir.tvm.ops`), which is why it is neither of them. No TVM import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convdiff.ir.graph import Layer

NCHW = (0, 1, 2, 3)
NHWC = (0, 2, 3, 1)  # physical axis i holds logical axis NHWC[i]


@dataclass
class Value:
    """A tensor produced by a layer: its layer id, physical shape and physical->logical axes."""

    layer: str
    shape: list[int]
    perm: tuple[int, ...]


@dataclass(frozen=True)
class OpCall:
    """One Relax call being converted: the var it binds, the op's name (or ``call_tir <prim>``),
    its attributes and its arguments resolved (:class:`Value`, ndarray, or lists of them)."""

    var: Any
    name: str
    attrs: Any
    args: list[Any]

    @property
    def x(self) -> Any:
        """The first argument, the data tensor of most ops."""
        return self.args[0]


@dataclass
class GraphBuilder:
    """The layers read so far, under unique ids, and where each one's tensor lives."""

    layers: list[Layer] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    # layer id -> (the Relax var holding its output, that tensor's physical->logical perm)
    tensors: dict[str, tuple[Any, tuple[int, ...]]] = field(default_factory=dict)

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

    def to_perm(self, value: Value, wanted: tuple[int, ...], var: Any) -> Value:
        """Make a layout-sensitive op's input hold the logical axes it assumes: when it does not,
        the op really reads a transposed tensor, made explicit as a logical ``transpose``."""
        if value.perm == wanted:
            return value
        axes = [0] * len(wanted)
        for i in range(len(wanted)):
            axes[wanted[i]] = value.perm[i]
        logical = logical_shape(value.shape, wanted)
        lid = self.add(
            Layer(
                f"{var_name(var)}_layout",
                "transpose",
                [value.layer],
                {"axes": axes},
                logical,
                source="layout mismatch",
            )
        )
        if value.layer in self.tensors:  # the same data, read in the wanted axis order
            self.tensors[lid] = (self.tensors[value.layer][0], wanted)
        return Value(lid, value.shape, wanted)

    def layer(
        self,
        op: OpCall,
        kind: str,
        inputs: list[Value],
        perm: tuple[int, ...],
        attrs: dict[str, Any] | None = None,
        params: dict[str, np.ndarray] | None = None,
        shape: list[int] | None = None,
    ) -> Value:
        """Add the layer ``kind`` that ``op`` becomes; its output has axes ``perm`` and the
        physical ``shape`` (default: the shape of ``op``'s var)."""
        shape = shape_of(op.var.ty) if shape is None else shape
        layer = Layer(
            var_name(op.var),
            kind,
            [v.layer for v in inputs],
            attrs or {},
            logical_shape(shape, perm),
            {k: np.asarray(v, dtype=np.float32) for k, v in (params or {}).items()},
            source=f"{op.name} {var_name(op.var)}".strip(),
        )
        lid = self.add(layer)
        self.tensors[lid] = (op.var, perm)
        return Value(lid, shape, perm)

    def other(self, op: OpCall) -> Value | list[Value]:
        """An op convdiff has no kind for: an ``other`` layer named by its Relax op, its float
        constant arguments kept as params.

        An op that returns a tuple (``relax.split``: torch's ``split``, ONNX Split, TFLite
        SPLIT) becomes one layer per field, each with its field's shape and ``attrs["field"]``,
        and its value is their list, so that ``lv[i]`` reads a real tensor: one layer for the
        whole tuple had no shape and no axes, and the first op reading a field with its axes
        failed (timm LeViT's and EfficientViT's attention split q, k, v: "IndexError: tuple
        index out of range")."""
        values = [a for a in flat(op.args) if isinstance(a, Value)]
        consts = {f"arg{i}": a for i, a in enumerate(op.args) if isinstance(a, np.ndarray)}
        consts = {k: v for k, v in consts.items() if v.dtype.kind == "f"}
        fields = getattr(op.var.ty, "fields", None)
        if fields is None:
            ndim = len(shape_of(op.var.ty))
            attrs = {"tvm_op": op.name, **_numeric_attrs(op.attrs, ndim)}
            return self.layer(op, "other", values, self._other_perm(values, ndim), attrs, consts)
        out = []
        for i, field_ty in enumerate(fields):
            shape = shape_of(field_ty)
            attrs = {"tvm_op": op.name, **_numeric_attrs(op.attrs, len(shape)), "field": i}
            perm = self._other_perm(values, len(shape))
            out.append(self.layer(op, "other", values, perm, attrs, consts, shape=shape))
        return out

    @staticmethod
    def _other_perm(values: list[Value], ndim: int) -> tuple[int, ...]:
        """An ``other`` output keeps its first input's axes when it has as many, else none."""
        return values[0].perm if values and len(values[0].perm) == ndim else identity_perm(ndim)


def _numeric_attrs(attrs: Any, ndim: int) -> dict[str, Any]:
    """The attributes of an op without a kind that say what it computes and compare across
    frontends: a norm's ``epsilon``, its ``axes`` (non-negative)."""
    found: dict[str, Any] = {}
    if attrs is None:
        return found
    names = set(dir(attrs))
    if "epsilon" in names:
        found["epsilon"] = float(py(attrs.epsilon))
    if "axes" in names and attrs.axes is not None and ndim:
        found["axes"] = sorted(int(py(a)) % ndim for a in attrs.axes)
    return found


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


def py(value: Any) -> Any:
    """TVM attribute values (Array, IntImm, FloatImm, String) as plain Python."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value") and not hasattr(value, "__len__"):
        return value.value
    try:
        return [py(v) for v in value]
    except TypeError:
        return str(value)


def flat(args: list[Any]) -> list[Any]:
    """Arguments with nested lists (Relax tuples) flattened."""
    out = []
    for a in args:
        out.extend(flat(a) if isinstance(a, list) else [a])
    return out


def layout_perm(layout: str) -> tuple[int, ...]:
    """The perm of a Relax layout string (NCHW or NHWC)."""
    if layout == "NCHW":
        return NCHW
    if layout == "NHWC":
        return NHWC
    raise ValueError(f"unsupported layout {layout!r}")


def logical_shape(shape: list[int], perm: tuple[int, ...]) -> list[int]:
    """The logical shape of a tensor whose physical axis i holds logical axis perm[i]."""
    if len(perm) != len(shape):
        return list(shape)
    logical = [0] * len(shape)
    for i, label in enumerate(perm):
        logical[label] = shape[i]
    return logical


def pads4(padding: list[int]) -> list[int]:
    """Relax padding of 1, 2 or 4 values as [top, left, bottom, right]."""
    if len(padding) == 1:
        return padding * 4
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    return list(padding)


def var_name(var: Any) -> str:
    """A Relax Var's or GlobalVar's name (``name`` in TVM 0.27, ``name_hint`` before)."""
    name = getattr(var, "name_hint", None) or getattr(var, "name", None)
    return str(name) if name is not None else ""
