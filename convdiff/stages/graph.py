"""Stage 4, graph: structural differences left after canonicalization, and the suspects.

Canonicalization removed every difference converters make legitimately (layout transposes,
explicit pads, BatchNorm folding, bias adds, ReLU6 as min/max), so a layer one graph has and
the other lacks is a real difference: ``missing_layer`` (the source has it), ``extra_layer``
(the target has it), or ``reordered`` when the same op stands in both graphs at different
places. Activation swaps at one spot are the hyperparameter stage's (``near_pairs``).

:func:`rank` orders the target's layers by how much the findings of all stages point at them.
"""

from __future__ import annotations

from typing import Any

from convdiff.ir.align import Unmatched
from convdiff.stages import StageContext, near_pairs
from convdiff.stages.findings import Finding, jsonable


def run(ctx: StageContext) -> list[Finding]:
    explained = {u.layer for pair in near_pairs(ctx) for u in pair}
    a_un = [u for u in ctx.alignment.unmatched if u.graph == "a" and u.layer not in explained]
    b_un = [u for u in ctx.alignment.unmatched if u.graph == "b" and u.layer not in explained]
    findings = []
    for ua in list(a_un):
        ub = next((u for u in b_un if _same_layer(ctx, ua, u)), None)
        if ub is None:
            continue
        a_un.remove(ua)
        b_un.remove(ub)
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
    return findings


def _same_layer(ctx: StageContext, ua: Unmatched, ub: Unmatched) -> bool:
    la, lb = ctx.a[ua.layer], ctx.b[ub.layer]
    return la.op == lb.op and la.attrs == lb.attrs and sorted(la.params) == sorted(lb.params)


def _inputs(ctx: StageContext, side: str, u: Unmatched) -> str:
    graph, name = (ctx.a, ctx.name_a) if side == "a" else (ctx.b, ctx.name_b)
    return ", ".join(str(name(i)) for i in graph[u.layer].inputs) or "the input"


def rank(findings: list[Finding]) -> list[dict[str, Any]]:
    """Target layers (else source layers) by the summed score of the findings naming them."""
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
    return sorted(scores.values(), key=lambda e: -e["score"])
