"""Activation evidence for the graph stage: where do the two models' intermediate outputs part?

The orchestrator (:func:`convdiff.commands.localize.runs.measure_runs`) runs each model once on TVM
on the images whose top-1 labels disagree, returning the output of every raw layer that stands for
an aligned canonical layer (``Layer.tensor``), in logical NCHW layout. :func:`compare` walks the
aligned pairs in the source graph's topological order and measures each pair's *relative
divergence*: ``max|a - b| / max(max|a|, TINY)`` over those images. The first pair beyond
:data:`TOLERANCE` whose inputs still agree is where the target starts computing something else
(:func:`first_divergence`); a layer's *growth* (its divergence over its inputs') ranks the suspects
(:func:`growth`).

Tolerance: 1e-4 of the layer's largest magnitude. Float32 reorderings (another kernel, a folded
BatchNorm, NHWC against NCHW) leave ~1e-7 per layer and ~1e-6 accumulated through a real
MobileNetV2; an int8 weight grid moves a conv's output by ~1e-3 of its scale, a lost pad or a
changed epsilon far more. 1e-4 keeps a 100x margin above the float noise and ~10x below the
smallest real fault. Pure numpy: the tensors are read here, only numbers go into the report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from convdiff.ir.graph import CanonicalGraph
from convdiff.stages import StageContext, near_pairs

TOLERANCE = 1e-4
TINY = 1e-12


def divergence(a: np.ndarray, b: np.ndarray) -> float | None:
    """``max|a-b| / max(max|a|, TINY)`` over all images (axis 0); None when the per-image
    sizes differ (a changed shape: the tensors cannot be compared element by element)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[:1] != b.shape[:1] or a[0].size != b[0].size:
        return None
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)  # [1,C,1,1] against [1,C]
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), TINY))


def beyond(div: float | None, tolerance: float = TOLERANCE) -> bool:
    """A pair diverges when its relative divergence exceeds the tolerance or shapes differ."""
    return div is None or div > tolerance


def pairs(ctx: StageContext) -> list[tuple[str, str, str]]:
    """``(source id, target id, op)`` of every aligned pair, plus the activations the aligner
    left unpaired at the same spot (ReLU6 against Clip(0, 5): :func:`near_pairs`), whose
    outputs are the first to part when their bounds differ."""
    found = [(p.a, p.b, p.op) for p in ctx.alignment.pairs]
    return found + [(ua.layer, ub.layer, ua.op) for ua, ub in near_pairs(ctx)]


def compare(
    a: CanonicalGraph,
    b: CanonicalGraph,
    matched: list[tuple[str, str, str]],
    acts_a: dict[str, np.ndarray],
    acts_b: dict[str, np.ndarray],
) -> list[dict[str, Any]]:
    """One row per aligned pair with tensors on both sides, in ``a``'s topological order:
    ``{source, target, op, divergence, input_divergence, input_shape_mismatch, shapes}``
    (divergence None: shapes differ; input_divergence: the largest over the measured inputs,
    None when none was measured, e.g. after the graph input)."""
    order = {layer.id: i for i, layer in enumerate(a.layers)}
    rows: dict[str, dict[str, Any]] = {}
    for la, lb, op in sorted(matched, key=lambda p: order.get(p[0], len(order))):
        ta, tb = a[la].tensor, b[lb].tensor
        if not ta or not tb or ta not in acts_a or tb not in acts_b:
            continue
        x, y = acts_a[ta], acts_b[tb]
        inputs = [rows[i]["divergence"] for i in a[la].inputs if i in rows]
        known = [v for v in inputs if v is not None]
        rows[la] = {
            "source": la,
            "target": lb,
            "op": op,
            "divergence": divergence(x, y),
            "input_divergence": max(known) if known else None,
            "input_shape_mismatch": len(known) < len(inputs),
            "shapes": [list(x.shape[1:]), list(y.shape[1:])],
        }
    return list(rows.values())


def first_divergence(
    rows: list[dict[str, Any]], tolerance: float = TOLERANCE
) -> dict[str, Any] | None:
    """The first row (source order) beyond tolerance, skipping graph inputs (the inputs
    stage's business): None when every measured layer agrees."""
    return next(
        (r for r in rows if r["op"] != "input" and beyond(r["divergence"], tolerance)), None
    )


def growth(rows: list[dict[str, Any]], tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """Rows whose divergence exceeds both the tolerance and their inputs', with a score in
    (0, 1]: log10 of the growth over ``max(input divergence, tolerance)``, 1 at 100x (a
    changed shape after agreeing inputs scores 1). A layer fed diverging inputs that only
    passes the divergence on (or is fed tensors of another shape) scores nothing."""
    found = []
    for r in rows:
        div, before = r["divergence"], r["input_divergence"]
        if r["op"] == "input" or r["input_shape_mismatch"] or not beyond(div, tolerance):
            continue
        base = tolerance if before is None or before <= tolerance else before
        if div is None:
            score = 1.0 if base == tolerance else 0.0
        else:
            score = min(math.log10(div / base) / 2, 1.0) if div > base else 0.0
        if score > 0:
            found.append({**r, "growth_score": score})
    return found


__all__ = [
    "TOLERANCE",
    "beyond",
    "compare",
    "divergence",
    "first_divergence",
    "growth",
    "pairs",
]
