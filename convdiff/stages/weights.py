"""Stage 2, weights: per aligned layer, how the target's parameters differ from the source's.

Both graphs are canonical (conv OIHW, dense [out, in], BatchNorm folded), so equal models have
equal parameters up to float32 rounding of the folding (relative difference below
:data:`REL_TOL`). A larger difference is classified by the first explanation that holds
exactly, from the most to the least specific:

- ``precision``: the target's values are the source's rounded to float16 or bfloat16, or lie
  on an int8 grid (per output channel or per tensor, symmetric) within half a step of the
  source's -- or the target file itself stores them as int8 (``ctx.quant``). A full-integer
  TFLite file also computes every layer's activations in int8: such a layer gets one precision
  finding, on its weight (which then says its activations' scales and its int32 bias; the
  bias's rounding, within half its step, is part of that finding, not one of its own), or,
  for a layer without a quantized weight (an add, a pool, a softmax), on ``activations``;
- ``transposed`` / ``flipped`` / ``layout``: equal after a permutation of axes (or a spatial
  flip), same shape or not;
- ``extra_class``: one more output row (1001 vs 1000 classes: a background class);
- ``zeroed`` / ``dropped`` / ``added``: the tensor is all zero or missing on one side;
- ``scale`` / ``shift``: equal up to a factor (global or per output channel) or an offset;
- ``value``: none of these: the values simply differ.

A per-channel scale on a layer whose folded BatchNorm epsilon differs between the two models is
the epsilon's doing: the hyperparameter stage reports it, this stage stays silent.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from convdiff.ir.graph import Layer
from convdiff.stages import StageContext, folded_epsilon
from convdiff.stages.findings import Finding, jsonable

REL_TOL = 1e-5  # float32 rounding of BatchNorm folding stays far below this
EXACT = 1e-6  # relative tolerance of "equal after ..." tests
# a full-integer layer computes in int8 end to end: its float weights alone cannot be put back
FALLBACK_FIX = (
    "run this layer in float (convdiff repair's float fallback), or convert without "
    "full-integer quantization (--tflite-opt dynamic-range keeps float activations)"
)


def run(ctx: StageContext) -> list[Finding]:
    findings = []
    for pair in ctx.alignment.pairs:
        la, lb = ctx.a[pair.a], ctx.b[pair.b]
        harmless = ctx.harmless(la.id)  # e.g. a scale the next ops undo (a folded hard-sigmoid)
        precise = True
        for name in sorted(set(la.params) | set(lb.params)):
            finding = compare_param(ctx, la, lb, name)
            if finding is not None:
                latent = harmless and finding.kind != "precision"
                findings.append(finding.as_latent() if latent else finding)
                precise = precise and finding.kind != "precision"
        activations = (ctx.quant.get(lb.id) or {}).get("activations")
        if precise and activations is not None:
            findings.append(activation_finding(ctx, la, lb, activations))
    return findings


def activation_finding(ctx: StageContext, la: Layer, lb: Layer, details: dict[str, Any]) -> Finding:
    """The precision a layer loses to its integer activations (a full-integer file's layer
    without a quantized weight, or whose weight is exactly representable). Its score is the
    rounding's share of the output's range: half a step of the 2^bits the type holds."""
    bits = {"int8": 8, "uint8": 8, "int16": 16}.get(str(details.get("activations")), 8)
    share = 0.5 / (2**bits - 1)
    where = f"output scale {details.get('output_scale', 0):.4g}, zero point "
    where += f"{details.get('output_zero_point', 0)}"
    return Finding(
        "weights",
        "precision",
        ctx.name_a(la.id),
        ctx.name_b(lb.id),
        f"{la.op} activations: precision lost: {details.get('activations')} activations in the "
        f"target file ({where})",
        jsonable(
            {
                "param": "activations",
                "op": la.op,
                "grid": f"{details.get('activations')} activations in the target file",
                "max_rel": share,
                **details,
            }
        ),
        FALLBACK_FIX,
        share,
    )


def compare_param(ctx: StageContext, la: Layer, lb: Layer, name: str) -> Finding | None:
    """The finding for one parameter of one aligned pair, or None when they agree."""
    a, b = la.params.get(name), lb.params.get(name)
    where = {"param": name, "op": la.op}
    quant = ctx.quant.get(lb.id) if name == "weight" else (ctx.quant.get(lb.id) or {}).get(name)
    if quant is not None and "scales" not in quant:  # only the layer's activations are integers
        quant = None

    def found(kind: str, summary: str, suggestion: str, **evidence: Any) -> Finding:
        score = float(evidence.get("max_rel", 1.0))
        return Finding(
            "weights",
            kind,
            ctx.name_a(la.id),
            ctx.name_b(lb.id),
            f"{la.op} {name}: {summary}",
            jsonable({**where, **evidence}),
            suggestion,
            score,
        )

    if b is None or a is None:
        present = a if b is None else b
        if not np.any(present):
            return None
        if b is None:
            return found(
                "dropped",
                "the target has none (the source's is not zero)",
                f"add the source's {name} to the target layer",
                shape_a=list(a.shape),  # type: ignore[union-attr]
            )
        return found(
            "added",
            "the target has one the source has not",
            f"remove the {name} from the target layer",
            shape_b=list(b.shape),
        )
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if a.shape != b.shape:
        return _shape_finding(a64, b64, name, found)
    stats = _stats(a64, b64)
    if stats["max_rel"] <= REL_TOL:
        return None
    if _epsilon_explains(la, lb, a64, b64, name):
        return None
    bias_scales = (ctx.quant.get(lb.id) or {}).get("bias_scales") if name == "bias" else None
    if bias_scales is not None and _within_half_step(a64, b64, bias_scales):
        return None  # an int32 bias's rounding: the layer's weight finding reports it
    if not np.any(b64) and not _rounded_to_zero(a64, quant):
        return found(
            "zeroed",
            "every value is zero in the target",
            f"copy the source's {name} into the target",
            **stats,
        )
    precision = _precision(a64, b, quant)
    if precision is not None:
        label, extra = precision
        return found(
            "precision",
            f"precision lost: {label} (max abs {stats['max_abs']:.3g}, "
            f"max rel {stats['max_rel']:.3g}){_activations_note(extra)}",
            FALLBACK_FIX if "output_scale" in extra else _precision_fix(label),
            grid=label,
            **extra,
            **stats,
        )
    perm = _permutation(a64, b64)
    if perm is not None:
        return found(
            "transposed",
            f"equal to the source's transposed by axes {perm}",
            f"transpose the target's {name} by axes {_inverse(perm)}",
            axes=perm,
            **stats,
        )
    if a64.ndim == 4 and np.allclose(a64[:, :, ::-1, ::-1], b64, rtol=EXACT, atol=0):
        return found(
            "flipped",
            "the kernel is flipped in both spatial axes (convolution vs correlation)",
            f"flip the target's {name} back along H and W",
            **stats,
        )
    scaled = _scale_or_shift(a64, b64)
    if scaled is not None:
        kind, label, extra = scaled
        return found(kind, label, f"undo it: {extra.pop('fix')}", **extra, **stats)
    return found(
        "value",
        f"values differ (max abs {stats['max_abs']:.3g}, max rel {stats['max_rel']:.3g})",
        f"copy the source's {name} into the target",
        **stats,
    )


# -- explanations ----------------------------------------------------------------------------


def _stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    diff = np.abs(a - b)
    scale = max(float(np.abs(a).max(initial=0.0)), 1e-12)
    mean_scale = max(float(np.abs(a).mean()) if a.size else 0.0, 1e-12)
    return {
        "max_abs": float(diff.max(initial=0.0)),
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "max_rel": float(diff.max(initial=0.0)) / scale,
        "mean_rel": (float(diff.mean()) if diff.size else 0.0) / mean_scale,
    }


def _epsilon_explains(la: Layer, lb: Layer, a: np.ndarray, b: np.ndarray, name: str) -> bool:
    """Folded BatchNorms of different epsilon scale each output channel (and move the bias)."""
    eps_a, eps_b = folded_epsilon(la), folded_epsilon(lb)
    if eps_a is None or eps_b is None or eps_a == eps_b:
        return False
    if name == "bias":
        return True  # (b - mean) * scale + beta: moves with the scale
    return _channel_scale(a, b) is not None


def _rounded_to_zero(a: np.ndarray, quant: dict[str, Any] | None) -> bool:
    """A tensor the target file stores as integers whose source values all lie within half a
    step of 0 (an int32 bias of tiny values): zero is its grid's nearest value, not a fault."""
    if quant is None or a.ndim == 0:
        return False
    steps = np.asarray(quant["scales"], dtype=np.float64)
    if steps.size == len(a) and steps.size > 1:
        steps = steps.reshape((-1,) + (1,) * (a.ndim - 1))
    elif steps.size != 1:
        return False
    return bool(np.all(np.abs(a) <= steps * 0.5 * (1 + 1e-3)))


def _precision(
    a: np.ndarray, b32: np.ndarray, quant: dict[str, Any] | None
) -> tuple[str, dict[str, Any]] | None:
    b = b32.astype(np.float64)
    if quant is not None:
        scales = np.asarray(quant["scales"], dtype=np.float64)
        label = f"{quant['dtype'].lower()} in the target file"
        label += f" ({'per-channel' if scales.size > 1 else 'per-tensor'} scales)"
        return label, {
            "tensor": quant["tensor"],
            "scale_min": float(scales.min()),
            "scale_max": float(scales.max()),
            **quant.get("details", {}),  # an ONNX file's op, zero points, activations
        }
    for dtype, label in ((np.float16, "float16"), ("bfloat16", "bfloat16")):
        rounded = _bfloat16(a) if dtype == "bfloat16" else a.astype(np.float16).astype(np.float64)
        if np.array_equal(rounded.astype(np.float32), b32) and not np.array_equal(rounded, a):
            return f"{label} rounding", {}
    for per_channel in (True, False):
        steps = _int8_steps(b, per_channel)
        if steps is None:
            continue
        on_grid = np.abs(b / steps - np.round(b / steps)).max() < 1e-3
        near = np.all(np.abs(a - b) <= steps * 0.5 * (1 + 1e-3) + 1e-12)
        if on_grid and near:
            mode = "per-channel" if per_channel else "per-tensor"
            return f"int8 grid ({mode}, symmetric)", {
                "step_min": float(steps.min()),
                "step_max": float(steps.max()),
            }
    return None


def _activations_note(extra: dict[str, Any]) -> str:
    """What a weight finding of a full-integer TFLite layer adds: its activations' type and
    scales, and its int32 bias (empty for other files)."""
    if "output_scale" not in extra:
        return ""
    note = f"; {extra['activations']} activations (output scale {extra['output_scale']:.4g}, "
    note += f"zero point {extra['output_zero_point']})"
    if "bias_dtype" in extra:
        note += f", {extra['bias_dtype'].lower()} bias"
    return note


def _within_half_step(a: np.ndarray, b: np.ndarray, scales: Any) -> bool:
    """Whether ``b`` is ``a`` rounded on an integer grid of ``scales`` (one per output channel
    or one for all): no value further than half a step, allowing float32 rounding of the
    folding."""
    step = np.asarray(scales, dtype=np.float64).reshape(-1)
    if step.size > 1 and (a.ndim != 1 or step.size != a.shape[0]):
        return False
    half = 0.5 * step * (1 + 1e-3) + REL_TOL * max(float(np.abs(a).max(initial=0.0)), 1e-12)
    return bool(np.all(np.abs(a - b) <= half))


def _int8_steps(b: np.ndarray, per_channel: bool) -> np.ndarray | None:
    """One step per element of a symmetric int8 grid whose largest value is +-127 steps."""
    if per_channel and b.ndim >= 2:
        peak = np.abs(b).reshape(b.shape[0], -1).max(axis=1)
        steps = peak / 127.0
        if np.any(steps == 0):
            return None
        return np.broadcast_to(steps.reshape((-1,) + (1,) * (b.ndim - 1)), b.shape)
    if per_channel:
        return None
    peak = float(np.abs(b).max(initial=0.0))
    return None if peak == 0 else np.full(b.shape, peak / 127.0)


def _bfloat16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even) and back."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def _precision_fix(label: str) -> str:
    if label.startswith(("int8", "uint8", "int16")):
        return (
            "keep the weights in float32: convert without weight quantization "
            "(e.g. TFLiteConverter without Optimize.DEFAULT: --tflite-opt none), or replace "
            "the dequantized weights with the source's float values"
        )
    return (
        f"keep float32 weights: convert without {label.split()[0]} quantization "
        "(--tflite-opt none), or copy the source's float32 values into the target"
    )


def _permutation(a: np.ndarray, b: np.ndarray) -> list[int] | None:
    """A non-identity axis permutation that makes ``a`` equal ``b`` (the first that does)."""
    for perm in itertools.permutations(range(a.ndim)):
        if list(perm) == list(range(a.ndim)):
            continue
        moved = a.transpose(perm)
        if moved.shape == b.shape and np.allclose(moved, b, rtol=EXACT, atol=1e-12):
            return list(perm)
    return None


def _inverse(perm: list[int]) -> list[int]:
    return [int(i) for i in np.argsort(perm)]


def _channel_scale(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Per-output-channel factors s with b = s * a (None when no such factors exist)."""
    if a.ndim < 2:
        return None
    fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    norm = (fa * fa).sum(axis=1)
    if np.any(norm == 0):
        return None
    s = (fa * fb).sum(axis=1) / norm
    residual = np.abs(fb - s[:, None] * fa).max()
    return s if residual <= 1e-5 * max(np.abs(fb).max(), 1e-12) else None


def _scale_or_shift(a: np.ndarray, b: np.ndarray) -> tuple[str, str, dict[str, Any]] | None:
    flat_a, flat_b = a.ravel(), b.ravel()
    norm = float(flat_a @ flat_a)
    tol = 1e-5 * max(float(np.abs(b).max()), 1e-12)
    if norm > 0:
        s = float(flat_a @ flat_b) / norm
        if np.abs(flat_b - s * flat_a).max() <= tol:
            return (
                "scale",
                f"the source's times {s:.6g}",
                {"factor": s, "fix": f"divide by {s:.6g}"},
            )
    shift = float((flat_b - flat_a).mean())
    if np.abs(flat_b - flat_a - shift).max() <= tol:
        return (
            "shift",
            f"the source's plus {shift:.6g}",
            {"offset": shift, "fix": f"subtract {shift:.6g}"},
        )
    per_channel = _channel_scale(a, b)
    if per_channel is not None:
        return (
            "scale",
            f"the source's times a per-channel factor ({per_channel.min():.4g} .. "
            f"{per_channel.max():.4g})",
            {
                "factor_min": float(per_channel.min()),
                "factor_max": float(per_channel.max()),
                "fix": "divide each output channel by its factor",
            },
        )
    return None


def _shape_finding(a: np.ndarray, b: np.ndarray, name: str, found: Any) -> Finding:
    shapes = {"shape_a": list(a.shape), "shape_b": list(b.shape)}
    if a.size == b.size:
        perm = _permutation(a, b)
        if perm is not None:
            return found(
                "layout",
                f"stored in another layout: the source's {list(a.shape)} transposed by axes "
                f"{perm} gives the target's {list(b.shape)}",
                f"transpose the target's {name} by axes {_inverse(perm)}",
                axes=perm,
                **shapes,
            )
    if a.ndim == b.ndim and b.shape[0] == a.shape[0] + 1 and a.shape[1:] == b.shape[1:]:
        for offset, where in ((1, "first"), (0, "last")):
            part = b[offset : offset + a.shape[0]]
            if np.allclose(part, a, rtol=1e-5, atol=1e-7):
                return found(
                    "extra_class",
                    f"the target has {b.shape[0]} outputs, the source {a.shape[0]}: its "
                    f"{where} output is an extra class (e.g. background, 1001 vs 1000), "
                    "the others equal the source's",
                    f"drop the target's {where} output (or shift its labels by one)",
                    extra_index=0 if offset == 1 else int(b.shape[0] - 1),
                    **shapes,
                )
    return found(
        "shape",
        f"shape {list(b.shape)} in the target, {list(a.shape)} in the source",
        f"give the target's {name} the source's shape and values",
        **shapes,
    )
