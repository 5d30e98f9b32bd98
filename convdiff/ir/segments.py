"""Segments: the parameter-free stretches between anchors, judged by what they compute.

Once the anchors are paired (:mod:`convdiff.ir.anchors`), the tensors entering them are the
*points* at which the two models can be cut: the source's tensor at a point can be fed to the
target in place of its own, and the target then computes every later point from the source's
values (:func:`convdiff.ir.tvm.execute.compile_forced`). A point whose target value still
differs from the source's is where the target computes another function -- in the anchor
before it, or in the ops between. A point that agrees proves the ops before it equivalent,
whatever they are (GELU by erf or tanh, LayerNorm fused or decomposed, attention by one op or
three, a hard-sigmoid folded into the weights before it): the hyperparams and graph stages do
not report what lies in a segment that agrees.

Pure: no framework, no TVM, no numbers but those measured elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from convdiff.ir.align import Alignment
from convdiff.ir.graph import CanonicalGraph


@dataclass(frozen=True)
class Point:
    """A tensor both models compute: ``a``/``b`` are canonical layer ids, ``tensor_a`` and
    ``tensor_b`` their raw tensors; ``fed``: the target reads the source's value there (an
    anchor's input) or only compares it (a graph output)."""

    a: str
    b: str
    tensor_a: str
    tensor_b: str
    fed: bool


@dataclass
class FunctionCheck:
    """The measured divergence at each point (None: not measured), and the images used."""

    points: list[Point]
    divergence: dict[str, float | None] = field(default_factory=dict)  # by point.b
    tolerance: float = 1e-4
    images: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # raw target tensor -> why not fed

    relaxed: dict[str, float] = field(default_factory=dict)  # point.b -> its own tolerance
    consumers: dict[Any, dict[str, list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )  # a cache of consumers_of per graph (agrees_after)
    segments: list[tuple[list[str], list[str]]] | None = field(
        default=None, repr=False, compare=False
    )  # a cache of the differing segments' layers (convdiff.stages.differing_segments)

    def tolerance_at(self, point: Point) -> float:
        return self.relaxed.get(point.b, self.tolerance)

    def differs(self, point: Point) -> bool:
        """A point differs when it was measured beyond tolerance or its sizes differ."""
        if point.b not in self.divergence:
            return False
        value = self.divergence[point.b]
        return value is None or value > self.tolerance_at(point)

    def relax(self, g: CanonicalGraph, lossy: list[str], tolerance: float) -> None:
        """Points of graph A downstream of the ``lossy`` layers (anchors whose weights lost
        precision, which is the weights stage's finding) differ only beyond ``tolerance``."""
        stops = {p.a: p for p in self.points}
        for layer_id in lossy:
            for lid in downstream(g, layer_id, set(stops)):
                self.relaxed[stops[lid].b] = max(self.relaxed.get(stops[lid].b, 0.0), tolerance)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FunctionCheck:
        """The check written by :meth:`to_json` (extra keys, e.g. timings, are ignored)."""
        found, divergence = [], {}
        for item in data["points"]:
            point = Point(*(item[k] for k in ("a", "b", "tensor_a", "tensor_b", "fed")))
            found.append(point)
            if item["divergence"] != "not measured":
                divergence[point.b] = item["divergence"]
        return cls(
            found,
            divergence,
            data["tolerance"],
            data["images"],
            data["skipped"],
            data.get("relaxed", {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "tolerance": self.tolerance,
            "points": [
                {**asdict(p), "divergence": self.divergence.get(p.b, "not measured")}
                for p in self.points
            ],
            "skipped": self.skipped,
            "relaxed": self.relaxed,
        }


def points(a: CanonicalGraph, b: CanonicalGraph, alignment: Alignment) -> list[Point]:
    """The inputs of every anchor pair (fed) and the graph outputs (compared), in A's order,
    one per target tensor."""
    found: dict[str, Point] = {}
    for anchor in alignment.anchors:
        ins_a, ins_b = a[anchor.a].inputs, b[anchor.b].inputs
        if len(ins_a) != len(ins_b):
            continue
        for ia, ib in zip(ins_a, ins_b, strict=True):
            if a[ia].op == "input" or not a[ia].tensor or not b[ib].tensor:
                continue
            found.setdefault(b[ib].tensor or ib, Point(ia, ib, a[ia].tensor, b[ib].tensor, True))
    for oa, ob in zip(a.outputs, b.outputs, strict=False):
        if a[oa].tensor and b[ob].tensor and b[ob].tensor not in found:
            found[b[ob].tensor] = Point(oa, ob, a[oa].tensor, b[ob].tensor, False)
    order = {layer.id: i for i, layer in enumerate(a.layers)}
    return sorted(found.values(), key=lambda p: order.get(p.a, len(order)))


def consumers_of(g: CanonicalGraph) -> dict[str, list[str]]:
    """Layer id -> the ids of the layers that read it."""
    consumers: dict[str, list[str]] = {}
    for layer in g.layers:
        for i in layer.inputs:
            consumers.setdefault(i, []).append(layer.id)
    return consumers


def downstream(
    g: CanonicalGraph,
    layer_id: str,
    stops: set[str],
    consumers: dict[str, list[str]] | None = None,
) -> set[str]:
    """The layers of ``stops`` that ``layer_id``'s output reaches without passing another
    one of them (itself included when it is one): the points whose values it can change.
    ``consumers``: :func:`consumers_of` ``g``, when the caller asks many times."""
    consumers = consumers_of(g) if consumers is None else consumers
    found, seen, todo = set(), {layer_id}, [layer_id]
    while todo:
        lid = todo.pop()
        if lid in stops:  # measured here; later points read the source's value of it
            found.add(lid)
            continue
        for nxt in consumers.get(lid, []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return found


def upstream(g: CanonicalGraph, layer_id: str, stops: set[str]) -> list[str]:
    """The layers whose values reach ``layer_id`` without passing a layer of ``stops``
    (``layer_id`` included): the segment that computes it."""
    found, todo = [], [layer_id]
    seen = {layer_id}
    while todo:
        lid = todo.pop()
        found.append(lid)
        for i in g[lid].inputs:
            if i not in seen and i not in stops and g[i].op != "input":
                seen.add(i)
                todo.append(i)
    return found


def agrees_after(check: FunctionCheck | None, g: CanonicalGraph, layer_id: str, side: str) -> bool:
    """True when every measured point ``layer_id`` (of graph ``side``, "a" or "b") reaches
    agrees: whatever differs at that layer changes nothing the target computes. False without
    a check, or when it reaches no measured point (nothing proves it harmless)."""
    if check is None:
        return False
    by_layer = {(p.a if side == "a" else p.b): p for p in check.points if p.b in check.divergence}
    key = (side, id(g), len(g.layers))  # one index per graph a stage asks about
    if key not in check.consumers:
        check.consumers[key] = consumers_of(g)
    reached = downstream(g, layer_id, set(by_layer), check.consumers[key])
    if not reached:
        return False
    return not any(check.differs(by_layer[lid]) for lid in reached)
