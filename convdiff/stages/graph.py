"""Stage 4, graph: structural differences left after canonicalization, and the suspects.

Canonicalization removed every difference converters make legitimately (layout transposes,
explicit pads, BatchNorm folding, bias adds, ReLU6 as min/max), so a layer one graph has and
the other lacks is a real difference: ``missing_layer`` (the source has it), ``extra_layer``
(the target has it), or ``reordered`` when the same op stands in both graphs at different
places. Activation swaps at one spot are the hyperparameter stage's (``near_pairs``).

Activation evidence (when the models ran, ``ctx.evidence["activations"]``, see
:mod:`convdiff.stages.activations`): on the images whose top-1 labels disagree, the first
aligned layer whose outputs diverge beyond tolerance while its inputs agree is a
``first_divergence`` finding -- the layer where the target starts computing something else.
No divergence, no finding.

:func:`rank` orders the target's layers by how much the findings of all stages point at them,
plus each layer's activation growth (its divergence against its inputs').
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from convdiff.ir.align import Unmatched
from convdiff.ir.segments import upstream
from convdiff.stages import (
    STRUCTURAL,
    StageContext,
    differing_segments,
    hyperparams,
    kind,
    near_pairs,
    segment_pairs,
    weights,
)
from convdiff.stages.activations import TOLERANCE, first_divergence, growth
from convdiff.stages.findings import Finding, jsonable


def run(ctx: StageContext) -> list[Finding]:
    explained = {u.layer for pair in near_pairs(ctx) + segment_pairs(ctx) for u in pair}
    kept = _structural(ctx)
    a_un = [
        u
        for u in ctx.alignment.unmatched
        if u.graph == "a" and u.layer not in explained and kept(u)
    ]
    b_un = [
        u
        for u in ctx.alignment.unmatched
        if u.graph == "b" and u.layer not in explained and kept(u)
    ]
    findings = []
    moved = _order_differs(ctx)
    for ua in list(a_un):
        ub = next((u for u in b_un if _same_layer(ctx, ua, u)), None)
        if ub is None:
            continue
        a_un.remove(ua)
        b_un.remove(ub)
        if not moved(ua.layer):
            continue  # the same ops in the same order: the aligner's confusion, not a move
        findings.append(
            Finding(
                "graph",
                "reordered",
                ctx.name_a(ua.layer),
                ctx.name_b(ub.layer),
                f"{ua.op} sits at another place in the target (source after "
                f"{_inputs(ctx, 'a', ua)}, target after {_inputs(ctx, 'b', ub)})",
                jsonable({"op": ua.op, "source_reason": ua.reason, "target_reason": ub.reason}),
                f"move the target's {ua.op} to follow {_inputs(ctx, 'a', ua)} as in the source",
            )
        )
    a_un, b_un = _counted(ctx, a_un, b_un)
    for u in a_un:
        findings.append(
            Finding(
                "graph",
                "missing_layer",
                ctx.name_a(u.layer),
                None,
                f"the target has no {u.op} where the source has {ctx.name_a(u.layer)}",
                jsonable({"op": u.op, "shape": list(u.shape), "reason": u.reason}),
                f"insert the source's {u.op} after {_inputs(ctx, 'a', u)} in the target",
            )
        )
    for u in b_un:
        findings.append(
            Finding(
                "graph",
                "extra_layer",
                None,
                ctx.name_b(u.layer),
                f"the target has an extra {u.op} ({ctx.name_b(u.layer)})",
                jsonable({"op": u.op, "shape": list(u.shape), "reason": u.reason}),
                f"remove the target's {u.op} {ctx.name_b(u.layer)}",
            )
        )
    if ctx.function is None:
        return findings + divergence_findings(ctx)
    # the first diverging layer, unless the segments prove its difference harmless
    first = [f for f in divergence_findings(ctx) if not _harmless_row(ctx, f)]
    return findings + first + function_findings(ctx, findings + first)


def _harmless_row(ctx: StageContext, finding: Finding) -> bool:
    source = next(
        (p.a for p in ctx.alignment.pairs if ctx.name_a(p.a) == finding.source_layer), None
    )
    return source is not None and ctx.harmless(source)


def _structural(ctx: StageContext) -> Callable[[Unmatched], bool]:
    """Which unmatched layers the graph stage may report. Without a function check, all of
    them. With one: only those in a segment that differs, of a kind a user places
    (:data:`convdiff.stages.STRUCTURAL`); the rest is how two exporters decompose one op."""
    if ctx.function is None:
        return lambda u: True
    inside = {"a": set(), "b": set()}
    for seg_a, seg_b in differing_segments(ctx):
        inside["a"].update(seg_a)
        inside["b"].update(seg_b)
    graphs = {"a": ctx.a, "b": ctx.b}
    return lambda u: u.layer in inside[u.graph] and kind(graphs[u.graph][u.layer]) in STRUCTURAL


def _order_differs(ctx: StageContext) -> Callable[[str], bool]:
    """Whether the segment of a source layer orders its user-placed ops otherwise in the
    target (always, without a function check): a ``reordered`` layer needs that."""
    if ctx.function is None:
        return lambda lid: True
    moved: set[str] = set()
    for seg_a, seg_b in differing_segments(ctx):
        order_a = [kind(ctx.a[lid]) for lid in seg_a if kind(ctx.a[lid]) in STRUCTURAL]
        order_b = [kind(ctx.b[lid]) for lid in seg_b if kind(ctx.b[lid]) in STRUCTURAL]
        same = {k for k in order_a if order_a.count(k) == order_b.count(k)}  # no extra one
        if [k for k in order_a if k in same] != [k for k in order_b if k in same]:
            moved.update(seg_a)
    return moved.__contains__


def _counted(
    ctx: StageContext, a_un: list[Unmatched], b_un: list[Unmatched]
) -> tuple[list[Unmatched], list[Unmatched]]:
    """With a function check, a missing or extra layer only where its segment holds more of
    its kind on one side than on the other: the same count is the aligner's confusion."""
    if ctx.function is None:
        return a_un, b_un
    keep_a, keep_b = [], []
    for seg_a, seg_b in differing_segments(ctx):
        count_a = Counter(kind(ctx.a[lid]) for lid in seg_a)
        count_b = Counter(kind(ctx.b[lid]) for lid in seg_b)
        for u in a_un:
            k = kind(ctx.a[u.layer])
            if u.layer in seg_a and count_a[k] > count_b[k]:
                keep_a.append(u)
        for u in b_un:
            k = kind(ctx.b[u.layer])
            if u.layer in seg_b and count_b[k] > count_a[k]:
                keep_b.append(u)
    return list(dict.fromkeys(keep_a)), list(dict.fromkeys(keep_b))


def function_findings(ctx: StageContext, structural: list[Finding]) -> list[Finding]:
    """One ``function_differs`` finding per point where the target, fed the source's tensors
    at the points before, computes something else, and no finding of the weights,
    hyperparams or graph stage lies in the segment before it: a difference the layer
    comparisons cannot name (an op the canonical graph keeps as ``other``, say) is still
    placed between two anchors."""
    check = ctx.function
    assert check is not None
    named = {f.target_layer for f in structural} | {f.source_layer for f in structural}
    named |= {f.target_layer for f in weights.run(ctx) + hyperparams.run(ctx)}
    fed = {p.b for p in check.points if p.fed}
    findings = []
    for point in check.points:
        if not check.differs(point):
            continue
        inside = upstream(ctx.b, point.b, fed)
        if any(ctx.name_b(lid) in named for lid in inside):
            continue
        value = check.divergence.get(point.b)
        how = "sizes differ" if value is None else f"relative divergence {value:.3g}"
        ops = sorted({ctx.b[lid].attrs.get("tvm_op", ctx.b[lid].op) for lid in inside})
        source, target = ctx.name_a(point.a), ctx.name_b(point.b)
        findings.append(
            Finding(
                "graph",
                "function_differs",
                source,
                target,
                f"fed the source's tensors before it, the target computes another {target} "
                f"({how} on {len(check.images)} image(s)); ops in between: {', '.join(ops)}",
                jsonable(
                    {
                        "divergence": value,
                        "tolerance": check.tolerance_at(point),
                        "images": check.images,
                        "segment": sorted(str(ctx.name_b(lid)) for lid in inside),
                    }
                ),
                f"compare the ops that compute the target's {target} with the source's {source}",
            )
        )
    return findings


def divergence_findings(ctx: StageContext) -> list[Finding]:
    """The ``first_divergence`` finding of the activation evidence, if any layer diverges."""
    act = ctx.evidence.get("activations") or {}
    tolerance = act.get("tolerance", TOLERANCE)
    row = first_divergence(act.get("rows") or [], tolerance)
    if row is None:
        return []
    source, target = ctx.name_a(row["source"]), ctx.name_b(row["target"])
    images = act.get("images", [])
    before = row["input_divergence"]
    if row["divergence"] is None:
        how = f"its output shape differs (per image {row['shapes'][0]} vs {row['shapes'][1]})"
    else:
        how = f"relative divergence {row['divergence']:.3g}"
    agree = before is None or before <= tolerance
    inputs = "its inputs agree" if agree else f"its inputs diverge by {before:.3g}"
    folded = ctx.b[row["target"]].folded if row["target"] in ctx.b else []
    return [
        Finding(
            "graph",
            "first_divergence",
            source,
            target,
            f"the first aligned layer whose outputs differ on the {len(images)} disagreeing "
            f"image(s): {row['op']} {source} -> {target} ({how}; {inputs})",
            jsonable(
                {
                    "op": row["op"],
                    "divergence": row["divergence"],
                    "input_divergence": before,
                    "tolerance": tolerance,
                    "shapes": row["shapes"],
                    "images": images,
                    "source_tensor": ctx.a[row["source"]].tensor,
                    "target_tensor": ctx.b[row["target"]].tensor,
                }
            ),
            f"compare the target's {row['op']} {target}"
            + (f" (with {', '.join(folded)} folded in)" if folded else "")
            + f" with the source's {source}: "
            + ("its inputs still match, its outputs do not" if agree else f"{inputs} already"),
        )
    ]


def activation_growth(ctx: StageContext) -> list[dict[str, Any]]:
    """Target layers whose activation divergence grows over their inputs', named as the files
    name them, with a score in (0, 1] (see :func:`convdiff.stages.activations.growth`)."""
    act = ctx.evidence.get("activations") or {}
    return [
        {
            "layer": ctx.name_b(r["target"]),
            "source_layer": ctx.name_a(r["source"]),
            "score": r["growth_score"],
        }
        for r in growth(act.get("rows") or [], act.get("tolerance", TOLERANCE))
    ]


def _same_layer(ctx: StageContext, ua: Unmatched, ub: Unmatched) -> bool:
    la, lb = ctx.a[ua.layer], ctx.b[ub.layer]
    return la.op == lb.op and la.attrs == lb.attrs and sorted(la.params) == sorted(lb.params)


def _inputs(ctx: StageContext, side: str, u: Unmatched) -> str:
    graph, name = (ctx.a, ctx.name_a) if side == "a" else (ctx.b, ctx.name_b)
    return ", ".join(str(name(i)) for i in graph[u.layer].inputs) or "the input"


def rank(
    findings: list[Finding], growth_rows: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Target layers (else source layers) by the summed score of the findings naming them
    (1 + score each) plus their activation growth (:func:`activation_growth`, 0..1). Ties keep
    the findings' order, then the source graph's: the ranking is deterministic."""
    scores: dict[str, dict[str, Any]] = {}
    for f in findings:
        if not f.is_fault or f.stage in ("inputs", "tools"):
            continue
        layer = f.target_layer or f.source_layer
        if layer is None:
            continue
        entry = scores.setdefault(
            layer, {"layer": layer, "source_layer": f.source_layer, "score": 0.0, "kinds": []}
        )
        entry["score"] += 1.0 + min(f.score, 1.0)
        entry["kinds"].append(f"{f.stage}:{f.kind}")
    for g in growth_rows or []:
        entry = scores.setdefault(
            g["layer"],
            {"layer": g["layer"], "source_layer": g["source_layer"], "score": 0.0, "kinds": []},
        )
        entry["score"] += g["score"]
        entry["kinds"].append("activations:growth")
    for entry in scores.values():
        entry["score"] = round(entry["score"], 6)
    return sorted(scores.values(), key=lambda e: -e["score"])
