"""The four localization stages (and the inputs check before them).

Every stage is a function ``run(ctx: StageContext) -> list[Finding]`` over the two canonical
graphs, their alignment and, for ``inputs`` and ``tools``, evidence the orchestrator measured
by running models (:mod:`convdiff.commands.localize.runs`). Stages import no framework: they
are pure numpy and can be tested on hand-made graphs.

Graph A is the source model, graph B the target; a fault is always described as what B does
differently from A.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from convdiff.ir.align import Alignment, Unmatched
from convdiff.ir.graph import CanonicalGraph
from convdiff.ir.segments import FunctionCheck, agrees_after, upstream
from convdiff.stages.findings import STAGES, Finding

_EPSILON = re.compile(r"batch_norm (\S+) epsilon=(\S+)")

# activations: one op kind replacing another at the same spot is a hyperparameter change
ACTIVATIONS = ("relu", "relu6", "clip", "sigmoid", "tanh")


@dataclass
class StageContext:
    """What the stages read. ``names_*`` map layer ids to the names the model files use;
    ``quant`` maps a target layer id to the int8 evidence of its weight (dynamic-range TFLite);
    ``evidence`` holds run measurements for the inputs and tools stages."""

    a: CanonicalGraph
    b: CanonicalGraph
    alignment: Alignment
    names_a: dict[str, str] = field(default_factory=dict)
    names_b: dict[str, str] = field(default_factory=dict)
    quant: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    function: FunctionCheck | None = None  # the segments judged by what they compute

    def harmless(self, layer_id: str, side: str = "a") -> bool:
        """Whether what differs at ``layer_id`` (of graph ``side``) changes nothing the target
        computes: every point downstream agrees (:func:`convdiff.ir.segments.agrees_after`)."""
        graph = self.a if side == "a" else self.b
        return agrees_after(self.function, graph, layer_id, side)

    def name_a(self, layer_id: str | None) -> str | None:
        return None if layer_id is None else self.names_a.get(layer_id, layer_id)

    def name_b(self, layer_id: str | None) -> str | None:
        return None if layer_id is None else self.names_b.get(layer_id, layer_id)


def stage_function(stage: str) -> Callable[[StageContext], list[Finding]]:
    """The ``run`` function of a stage module (imported on demand)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return import_module(f"convdiff.stages.{stage}").run


def near_pairs(ctx: StageContext) -> list[tuple[Unmatched, Unmatched]]:
    """Unmatched layers of A and B at the same spot: both single-input, fed by counterparts.

    The aligner pairs only layers of the same op kind, so ReLU6 in A against Clip(0, 5) in B
    leaves both unmatched; this pairs them again for the hyperparameter stage, and the graph
    stage leaves them out of its missing/extra list.
    """
    mb = {p.b: p.a for p in ctx.alignment.pairs}
    a_un = [u for u in ctx.alignment.unmatched if u.graph == "a"]
    b_un = [u for u in ctx.alignment.unmatched if u.graph == "b"]
    result, used = [], set()
    for ua in a_un:
        la = ctx.a[ua.layer]
        if len(la.inputs) != 1:
            continue
        for ub in b_un:
            lb = ctx.b[ub.layer]
            if ub.layer in used or len(lb.inputs) != 1:
                continue
            if mb.get(lb.inputs[0]) == la.inputs[0] and _same_family(la.op, lb.op):
                result.append((ua, ub))
                used.add(ub.layer)
                break
    return result


# the kinds a graph finding may name inside a segment that differs: ops a user can place in
# their model; reshapes, transposes and arithmetic are how exporters decompose those ops
STRUCTURAL = (
    "conv2d", "dense", "pool_max", "pool_avg", "pool_global_avg", "relu", "relu6", "clip",
    "sigmoid", "tanh", "softmax", "concat", "pad", "resize", "batch_norm", "mean",
    "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.erf", "relax.nn.silu", "relax.nn.layer_norm",
    "relax.nn.group_norm", "relax.nn.softmax", "relax.nn.log_softmax",
)  # fmt: skip


def kind(layer: Any) -> str:
    """A layer's kind for counting: its op, or for an ``other`` layer the Relax op."""
    return str(layer.attrs.get("tvm_op", layer.op)) if layer.op == "other" else layer.op


def differing_segments(ctx: StageContext) -> list[tuple[list[str], list[str]]]:
    """The layers (A's, B's) of each segment whose function differs, in topological order:
    where the hyperparams and graph stages look (:mod:`convdiff.ir.segments`)."""
    check = ctx.function
    if check is None:
        return []
    if check.segments is None:  # the hyperparams and graph stages ask several times
        check.segments = _differing_segments(ctx, check)
    return check.segments


def _differing_segments(
    ctx: StageContext, check: FunctionCheck
) -> list[tuple[list[str], list[str]]]:
    fed_a = {p.a for p in check.points if p.fed}
    fed_b = {p.b for p in check.points if p.fed}
    order_a = {lay.id: i for i, lay in enumerate(ctx.a.layers)}
    order_b = {lay.id: i for i, lay in enumerate(ctx.b.layers)}
    found = []
    for point in check.points:
        if check.differs(point):
            seg_a = sorted(upstream(ctx.a, point.a, fed_a), key=order_a.__getitem__)
            seg_b = sorted(upstream(ctx.b, point.b, fed_b), key=order_b.__getitem__)
            found.append((seg_a, seg_b))
    return found


def segment_pairs(ctx: StageContext) -> list[tuple[Unmatched, Unmatched]]:
    """Unmatched layers of one kind, as many in A as in B within a segment that differs,
    paired in order where their attributes differ (a softmax whose axis changed, which the
    aligner could not place among an exporter's reshapes): the hyperparams stage compares
    them, the graph stage leaves them out of its missing/extra list."""
    un_a = {u.layer: u for u in ctx.alignment.unmatched if u.graph == "a"}
    un_b = {u.layer: u for u in ctx.alignment.unmatched if u.graph == "b"}
    result = []
    for seg_a, seg_b in differing_segments(ctx):
        for k in dict.fromkeys(kind(ctx.a[lid]) for lid in seg_a if lid in un_a):
            if k not in STRUCTURAL:
                continue
            mine = [lid for lid in seg_a if lid in un_a and kind(ctx.a[lid]) == k]
            theirs = [lid for lid in seg_b if lid in un_b and kind(ctx.b[lid]) == k]
            if len(mine) != len(theirs):
                continue
            for la, lb in zip(mine, theirs, strict=True):
                if ctx.a[la].attrs != ctx.b[lb].attrs:
                    result.append((un_a[la], un_b[lb]))
    return result


def folded_batch_norm(layer: Any) -> tuple[str, float] | None:
    """The id and epsilon of a BatchNorm canonicalization folded into ``layer`` (else None)."""
    for item in layer.folded:
        match = _EPSILON.match(item)
        if match:
            return match.group(1), float(match.group(2))
    return None


def folded_epsilon(layer: Any) -> float | None:
    found = folded_batch_norm(layer)
    return None if found is None else found[1]


def _same_family(op_a: str, op_b: str) -> bool:
    return op_a == op_b or (op_a in ACTIVATIONS and op_b in ACTIVATIONS)


__all__ = [
    "ACTIVATIONS",
    "STRUCTURAL",
    "differing_segments",
    "kind",
    "segment_pairs",
    "StageContext",
    "folded_batch_norm",
    "folded_epsilon",
    "near_pairs",
    "stage_function",
]
