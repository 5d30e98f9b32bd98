"""Stage 3, hyperparameters: what an aligned layer computes besides its weights.

For each aligned pair, every attribute of the canonical layers is compared (strides, pads as
``[top, left, bottom, right]``, dilation, groups, pooling kernel, ``ceil_mode``,
``count_include_pad``, clip bounds, softmax/concat/mean axes, flatten order, pad value/mode;
a resize's method, coordinate mode, rounding, size and scale, as one ``resize`` finding);
a folded BatchNorm's epsilon is compared too (canonicalization records it in ``folded``).
Attributes that only restate a weight's shape (a conv's ``kernel``, a dense layer's ``units``)
are the weights stage's business. One activation standing where the other model has another
(ReLU6 against ``Clip(0, 5)``; the aligner leaves both unmatched) is an ``activation`` or
``clip_bounds`` finding here, not a graph change -- unless the target's clip is the range a
QDQ quantizer folded the source's ReLU/ReLU6 into (``clamp`` evidence): that is quantization,
and the range ends where the calibration images' values did.
"""

from __future__ import annotations

from typing import Any

from convdiff.ir.graph import Layer
from convdiff.stages import StageContext, folded_batch_norm, near_pairs, segment_pairs
from convdiff.stages.findings import Finding, jsonable

# attributes derived from parameter shapes or layout bookkeeping: not hyperparameters
SKIP = {"conv2d": {"kernel"}, "dense": {"units"}}
SKIP_ALL = {"noise", "shape", "spatial_only", "pad_width", "keepdims", "tvm_op", "field"}
BOUNDS = {"relu": (0.0, float("inf")), "relu6": (0.0, 6.0)}


def run(ctx: StageContext) -> list[Finding]:
    findings: list[Finding] = []
    for pair in ctx.alignment.pairs:
        la, lb = ctx.a[pair.a], ctx.b[pair.b]
        found = _attr_findings(ctx, la, lb) + _epsilon_findings(ctx, la, lb)
        if found and ctx.harmless(la.id):  # its segment computes what the source's does
            found = [f.as_latent() for f in found]
        findings.extend(found)
    for ua, ub in near_pairs(ctx):
        finding = _activation_finding(ctx, ctx.a[ua.layer], ctx.b[ub.layer])
        if finding is not None:
            findings.append(finding.as_latent() if ctx.harmless(ua.layer) else finding)
    for ua, ub in segment_pairs(ctx):  # in a segment that differs: not harmless
        findings.extend(_attr_findings(ctx, ctx.a[ua.layer], ctx.b[ub.layer]))
    return findings


def _attr_findings(ctx: StageContext, la: Layer, lb: Layer) -> list[Finding]:
    if la.op == "resize":
        return _resize_findings(ctx, la, lb)
    skip = SKIP_ALL | SKIP.get(la.op, set())
    if la.op == "clip" and _folded(ctx, _bounds(la), lb):
        skip = skip | {"min", "max"}
    findings = []
    for key in [k for k in dict.fromkeys([*la.attrs, *lb.attrs]) if k not in skip]:
        va, vb = la.attrs.get(key), lb.attrs.get(key)
        if _same(va, vb):
            continue
        kind, summary, fix = _describe(la.op, key, va, vb)
        findings.append(
            Finding(
                "hyperparams",
                kind,
                ctx.name_a(la.id),
                ctx.name_b(lb.id),
                f"{la.op} {summary}",
                jsonable({"op": la.op, "attr": key, "source": va, "target": vb}),
                fix,
            )
        )
    return findings


def _resize_findings(ctx: StageContext, la: Layer, lb: Layer) -> list[Finding]:
    """One ``resize`` finding listing every differing attribute: method, coordinate mode and
    rounding decide the sampled positions together, so one wrong setting is one fault."""
    keys = [k for k in dict.fromkeys([*la.attrs, *lb.attrs]) if k not in SKIP_ALL]
    diffs = {k: (la.attrs.get(k), lb.attrs.get(k)) for k in keys}
    diffs = {k: v for k, v in diffs.items() if not _same(*v)}
    if not diffs:
        return []
    said = "; ".join(f"{k} source {va}, target {vb}" for k, (va, vb) in diffs.items())
    setting = ", ".join(f"{k}={va}" for k, (va, _) in diffs.items())
    return [
        Finding(
            "hyperparams",
            "resize",
            ctx.name_a(la.id),
            ctx.name_b(lb.id),
            f"resize differs ({said})",
            jsonable(
                {
                    "op": "resize",
                    "attrs": list(diffs),
                    "source": {k: va for k, (va, _) in diffs.items()},
                    "target": {k: vb for k, (_, vb) in diffs.items()},
                }
            ),
            f"set the target resize's {setting} as the source's",
        )
    ]


def _same(va: Any, vb: Any) -> bool:
    if isinstance(va, float) and isinstance(vb, float):
        return va == vb or abs(va - vb) <= 1e-6 * max(abs(va), abs(vb))
    return va == vb


def _describe(op: str, key: str, va: Any, vb: Any) -> tuple[str, str, str]:
    """Kind, one-line summary and repair for one attribute mismatch."""
    both = f"source {va}, target {vb}"
    if key == "pads":
        if isinstance(vb, list) and not any(vb) and isinstance(va, list) and any(va):
            return (
                "lost_pads",
                f"pads lost ({both}; [top, left, bottom, right])",
                (f"give the target {op} the source's pads {va} (or insert a zero Pad before it)"),
            )
        if _asymmetric(va) or _asymmetric(vb):
            return (
                "asymmetric_pads",
                f"asymmetric pads ({both}; [top, left, bottom, right])",
                (
                    f"set the target {op}'s pads to {va}: TF 'SAME' pads bottom/right only when "
                    "the total is odd, explicit symmetric pads do not"
                ),
            )
        return (
            "pads",
            f"pads differ ({both}; [top, left, bottom, right])",
            (f"set the target {op}'s pads to {va}"),
        )
    fixes = {
        "count_include_pad": f"set count_include_pad={va} on the target {op} (the source "
        f"{'counts' if va else 'does not count'} padded zeros in the average)",
        "ceil_mode": f"set ceil_mode={va} on the target {op}",
    }
    fix = fixes.get(key, f"set the target {op}'s {key} to {va}")
    if op == "clip" and key in ("min", "max"):
        return "clip_bounds", f"clip {key} differs ({both})", f"clip the target at {key}={va}"
    return key, f"{key} differs ({both})", fix


def _asymmetric(pads: Any) -> bool:
    return isinstance(pads, list) and len(pads) == 4 and (pads[0], pads[1]) != (pads[2], pads[3])


def _epsilon_findings(ctx: StageContext, la: Layer, lb: Layer) -> list[Finding]:
    fa, fb = folded_batch_norm(la), folded_batch_norm(lb)
    if fa is None or fb is None or _same(fa[1], fb[1]):
        return []
    return [
        Finding(
            "hyperparams",
            "epsilon",
            ctx.name_a(fa[0]),
            ctx.name_b(fb[0]),
            f"batch_norm (folded into {la.op}) epsilon differs (source {fa[1]:g}, "
            f"target {fb[1]:g})",
            jsonable(
                {
                    "op": "batch_norm",
                    "attr": "epsilon",
                    "source": fa[1],
                    "target": fb[1],
                    "folded_into": [ctx.name_a(la.id), ctx.name_b(lb.id)],
                }
            ),
            f"set the target BatchNorm's epsilon to {fa[1]:g} (its folded weights then equal "
            "the source's)",
        )
    ]


def _bounds(layer: Layer) -> tuple[float, float] | None:
    if layer.op == "clip":
        return float(layer.attrs["min"]), float(layer.attrs["max"])
    return BOUNDS.get(layer.op)


def _folded(ctx: StageContext, source: tuple[float, float] | None, lb: Layer) -> bool:
    """Whether target clip ``lb`` is the range a quantizer folded the source's activation into
    (``ctx.quant`` says ``clamp``: a QDQ pair of an ONNX file, :mod:`convdiff.ir.onnx_quant`):
    the range starts where the source's does and ends within it (at the largest value the
    calibration images reached), so on such values both compute the same."""
    clamp = (ctx.quant.get(lb.id) or {}).get("clamp")
    if clamp is None or source is None:
        return False
    low, high = (float(v) for v in clamp)
    return source[0] == low and high <= source[1] * (1 + 1e-6)


def _activation_finding(ctx: StageContext, la: Layer, lb: Layer) -> Finding | None:
    ba, bb = _bounds(la), _bounds(lb)
    evidence: dict[str, Any] = {"source_op": la.op, "target_op": lb.op}
    if ba is not None and bb is not None:
        if ba == bb or _folded(ctx, ba, lb):
            return None
        evidence.update(source=list(ba), target=list(bb))
        return Finding(
            "hyperparams",
            "clip_bounds",
            ctx.name_a(la.id),
            ctx.name_b(lb.id),
            f"activation clip bounds differ (source {la.op} [{ba[0]:g}, {ba[1]:g}], "
            f"target {lb.op} [{bb[0]:g}, {bb[1]:g}])",
            jsonable(evidence),
            f"clip the target to [{ba[0]:g}, {ba[1]:g}] ({la.op}) as the source does",
        )
    if la.op == lb.op:
        return None
    return Finding(
        "hyperparams",
        "activation",
        ctx.name_a(la.id),
        ctx.name_b(lb.id),
        f"activation differs (source {la.op}, target {lb.op})",
        jsonable(evidence),
        f"use {la.op} in the target as the source does",
    )
