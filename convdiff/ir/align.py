"""Layer alignment of two canonical graphs by topology, op kind and shape -- never by names.

Names mean nothing across converters (``conv2d_1`` in Keras, ``/features/0/Conv`` in ONNX,
``lv3`` in Relax). Two layers correspond when they do the same kind of operation on inputs
that correspond. Alignment grows from the graph inputs: walking graph A in topological order,
a layer is paired with the not-yet-paired layer of graph B of the same op kind whose inputs are
the counterparts of its own inputs; among several, the one with the same (squeezed) output
shape and parameter shapes wins, then the first in B's order. Branch order does not matter.

A layer one graph has and the other lacks (an extra activation, a transpose of real meaning,
an op a converter split in two) is reported unmatched with the reason, and alignment
continues past it: a single-input layer of A without a counterpart stands for its input
downstream, and up to ``max_skip`` unpaired single-input layers of B may sit between a paired
input and a candidate. Unpaired arithmetic with a constant (a bias or BatchNorm's scale and
shift that canonicalization could not fold, say a bias added along the wrong axis) does not
count toward ``max_skip``, up to :data:`MAX_CONSTANT_SKIP` of them: without that, every layer
after such a spot was unmatched and reported as reordered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convdiff.ir.anchors import Anchor, pair_anchors
from convdiff.ir.graph import CanonicalGraph, Layer

COMMUTATIVE = ("add", "mul", "maximum", "minimum")
CONSTANT_ARITHMETIC = ("add", "sub", "mul", "div")  # with a "const" param: one data input
MAX_CONSTANT_SKIP = 6


@dataclass(frozen=True)
class Pair:
    """Layer ``a`` of graph A corresponds to layer ``b`` of graph B."""

    a: str
    b: str
    op: str
    same_shape: bool  # squeezed output shapes and parameter shapes agree
    direct: bool  # no unmatched layer sits between them and their paired inputs


@dataclass(frozen=True)
class Unmatched:
    graph: str  # "a" | "b"
    layer: str
    op: str
    shape: tuple[int, ...]
    reason: str


@dataclass
class Alignment:
    pairs: list[Pair] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)  # the pairs placed first, by weights

    def __bool__(self) -> bool:
        """True when every layer of both graphs has its counterpart with the same shapes."""
        return not self.unmatched and all(p.same_shape and p.direct for p in self.pairs)

    def b_of(self, a_id: str) -> str | None:
        return next((p.b for p in self.pairs if p.a == a_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": [asdict(p) for p in self.pairs],
            "unmatched": [{**asdict(u), "shape": list(u.shape)} for u in self.unmatched],
            "anchors": [asdict(x) for x in self.anchors],
        }


def squeezed(shape: list[int]) -> tuple[int, ...]:
    """A shape without its batch axis and size-1 axes: [1, 8, 1, 1] and [-1, 8] describe the
    same features (the batch may be fixed on one side and dynamic on the other)."""
    return tuple(d for d in shape[1:] if d != 1)


def signature(layer: Layer) -> tuple[Any, ...]:
    params = tuple(sorted((k, tuple(v.shape)) for k, v in layer.params.items()))
    return (squeezed(layer.shape), params)


def align(a: CanonicalGraph, b: CanonicalGraph, max_skip: int = 2) -> Alignment:
    """Pair the layers of ``a`` and ``b``; see the module docstring."""
    return _Aligner(a, b, max_skip).run()


class _Aligner:
    def __init__(self, a: CanonicalGraph, b: CanonicalGraph, max_skip: int) -> None:
        self.a, self.b, self.max_skip = a, b, max_skip
        self.m: dict[str, str] = {}  # a -> b
        self.mb: dict[str, str] = {}  # b -> a
        self.alias: dict[str, str] = {}  # unmatched single-input A layer -> the layer it stands for
        self.result = Alignment()
        self.skipped_b: dict[str, str] = {}  # B layer -> reason

    def run(self) -> Alignment:
        for ia, ib in zip(self.a.inputs, self.b.inputs, strict=False):
            self._pair(self.a[ia], self.b[ib], direct=True)
        for anchor in pair_anchors(self.a, self.b):
            self._pair(self.a[anchor.a], self.b[anchor.b], direct=True)
            self.result.anchors.append(anchor)
        for layer in self.a.layers:
            if layer.op == "input" or layer.id in self.m:
                continue
            self._align_one(layer)
        for layer in self.b.layers:
            if layer.id in self.mb:
                continue
            reason = self.skipped_b.get(layer.id) or self._b_reason(layer)
            self.result.unmatched.append(
                Unmatched("b", layer.id, layer.op, tuple(layer.shape), reason)
            )
        return self.result

    def _pair(self, la: Layer, lb: Layer, direct: bool) -> None:
        self.m[la.id], self.mb[lb.id] = lb.id, la.id
        same = signature(la) == signature(lb)
        self.result.pairs.append(Pair(la.id, lb.id, la.op, same, direct))

    def _resolve_a(self, lid: str) -> str:
        while lid in self.alias:
            lid = self.alias[lid]
        return lid

    def _resolve_b(self, lid: str) -> tuple[str, list[str]]:
        """Walk up from a B layer through at most ``max_skip`` unpaired single-input layers
        (arithmetic with a constant not counted, up to :data:`MAX_CONSTANT_SKIP`)."""
        passed: list[str] = []
        counted = constants = 0
        while lid not in self.mb:
            layer = self.b[lid]
            if layer.op == "input" or len(layer.inputs) != 1:
                break
            constant = layer.op in CONSTANT_ARITHMETIC and "const" in layer.params
            if constant and constants < MAX_CONSTANT_SKIP:
                constants += 1
            elif counted < self.max_skip:
                counted += 1
            else:
                break
            passed.append(lid)
            lid = layer.inputs[0]
        return lid, passed

    def _align_one(self, layer: Layer) -> None:
        sources = [self._resolve_a(i) for i in layer.inputs]
        missing = [s for s in sources if s not in self.m]
        if missing:
            self._unmatched_a(layer, f"its input {missing[0]} has no counterpart in B")
            return
        wanted = [self.m[s] for s in sources]
        candidates = []
        for cand in self.b.layers:
            if cand.id in self.mb or cand.op != layer.op or len(cand.inputs) != len(wanted):
                continue
            resolved = [self._resolve_b(i) for i in cand.inputs]
            got = [r[0] for r in resolved]
            match = sorted(got) == sorted(wanted) if layer.op in COMMUTATIVE else got == wanted
            if match:
                passed = [p for r in resolved for p in r[1]]
                candidates.append((signature(cand) != signature(layer), len(passed), cand, passed))
        if not candidates:
            after = [
                f"{c.op} {c.id}" for w in wanted for c in self.b.consumers(w) if c.id not in self.mb
            ]
            follows = ", ".join(wanted)
            seen = f"B has {', '.join(after)} there" if after else "B has no unpaired layer there"
            self._unmatched_a(
                layer,
                f"no {layer.op} of shape {list(layer.shape)} follows {follows} in B ({seen})",
            )
            return
        candidates.sort(key=lambda c: (c[0], c[1]))
        _, _, best, passed = candidates[0]
        for lid in passed:
            self.skipped_b[lid] = (
                f"extra {self.b[lid].op} in B between {self._resolve_b(lid)[0]} and {best.id}; "
                f"A goes straight to {layer.op} {layer.id}"
            )
        direct = not passed and all(s == i for s, i in zip(sources, layer.inputs, strict=True))
        self._pair(layer, best, direct)

    def _unmatched_a(self, layer: Layer, reason: str) -> None:
        self.result.unmatched.append(Unmatched("a", layer.id, layer.op, tuple(layer.shape), reason))
        if len(layer.inputs) == 1:
            self.alias[layer.id] = self._resolve_a(layer.inputs[0])

    def _b_reason(self, layer: Layer) -> str:
        paired = [i for i in layer.inputs if i in self.mb]
        if len(paired) < len(layer.inputs):
            return f"its input {next(i for i in layer.inputs if i not in self.mb)} is unpaired"
        return f"no {layer.op} of shape {list(layer.shape)} in A follows " + ", ".join(
            self.mb[i] for i in paired
        )


def param_diffs(a: CanonicalGraph, b: CanonicalGraph, alignment: Alignment) -> dict[str, float]:
    """Max abs difference of each same-named parameter of each same-shape pair (``a/param``)."""
    diffs = {}
    for pair in alignment.pairs:
        la, lb = a[pair.a], b[pair.b]
        for name, value in la.params.items():
            other = lb.params.get(name)
            if other is not None and other.shape == value.shape:
                diffs[f"{pair.a}/{name}"] = float(np.max(np.abs(value - other), initial=0.0))
    return diffs
