"""Float fallback: keep a quantized model quantized, but run the layers that cost most in float.

Why not restore every layer: a quantized model is deployed for its size and integer kernels; the
user wants the fewest float layers that bring its labels back. TFLite's QuantizationDebugger
lets a user denylist layers by hand; here the layers are ranked by a *measured* contribution
(each format module says how it measures), and the search keeps a set only when the target,
rewritten with those layers in float and run on the images, agrees better than before.

The search: with the candidates ranked, try the top k for k = 1, 2, 4, ... (one inference pass
each) until the top-1 discrepancy reaches 0, then bisect between the last two k for the fewest
layers that still reach it. Contributions are measured layer by layer, so a prefix of the
ranking is the natural family to search; monotonicity is assumed by the bisection but every
answer it gives was measured. When no k reaches 0 (all layers in float included), the best set
tried is kept if it is better than the quantized target (top-1 first, then the largest output
difference).

A format module (``fallback_onnx``, ``fallback_tflite``) provides three functions:
``quantized_layers(ctx)``, ``candidates(ctx)`` and ``write(ctx, layers, out)``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from convdiff.repair.verify import Agreement
from convdiff.runtime.pool import WorkerPool

# target format -> its module (fallback_onnx, fallback_tflite: quantized_layers, candidates, write)
FORMATS: dict[str, str] = {
    "onnx": "convdiff.repair.fallback_onnx",
    "tflite": "convdiff.repair.fallback_tflite",
}


@dataclass(frozen=True)
class Candidate:
    """A quantized layer that could run in float."""

    layer: str  # in the target file's own names: what the format's write() takes
    contribution: float  # its measured share of the error; larger falls back first
    measure: str  # how it was measured, e.g. "QuantizationDebugger rmse/scale"


@dataclass
class FallbackContext:
    """What a format module needs to measure and rewrite a quantized target."""

    source: Path
    source_framework: str
    target: Path
    images: Path  # .npz, key x: the images as the source is fed (float32 NHWC)
    pool: WorkerPool
    work: Path
    findings: list[Any] = field(default_factory=list)  # the localization's findings
    layout: str = "NHWC"  # how the source model takes the images
    # the localization's StageContext (aligned canonical graphs): with it the repair planner
    # brings the source's float weights into the target's layout for the layers in float
    stage_context: Any = None


@dataclass(frozen=True)
class Trial:
    """One rewritten target and what the differential said."""

    layers: int  # how many of the ranked layers ran in float
    top1_discrepancy: float
    max_abs_diff: float
    file: str


@dataclass
class FallbackResult:
    """What the search found; ``layers`` is empty when no set was better than the target."""

    before: Agreement
    after: Agreement
    quantized_layers: int
    measure: str
    layers: list[str] = field(default_factory=list)
    size_before: int = 0
    size_after: int = 0
    trials: list[Trial] = field(default_factory=list)
    final_file: str = ""

    @property
    def passes(self) -> int:
        """Inference passes of the target over the image set."""
        return len(self.trials)

    def to_json(self) -> dict[str, Any]:
        return {
            "quantized_layers": self.quantized_layers,
            "float_layers": len(self.layers),
            "layers": self.layers,
            "measure": self.measure,
            "top1_before": self.before.top1_discrepancy,
            "top1_after": self.after.top1_discrepancy,
            "max_abs_diff_before": self.before.max_abs_diff,
            "max_abs_diff_after": self.after.max_abs_diff,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "trials": [vars(t) for t in self.trials],
        }


def format_module(fmt: str) -> ModuleType | None:
    """The fallback module of a target format, or None when the format has none."""
    name = FORMATS.get(fmt)
    return importlib.import_module(name) if name else None


def search(
    ctx: FallbackContext,
    fmt: ModuleType,
    before: Agreement,
    run_target: Callable[[Path], np.ndarray],
    measure: Callable[[np.ndarray], Agreement],
    step: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> FallbackResult:
    """Find the fewest top-ranked layers whose float fallback brings top-1 to 0; see above.

    ``run_target(path)`` runs a rewritten target on the images, ``measure(y)`` compares its
    outputs with the source's; ``step(label)`` frames each phase for a progress display.
    """
    step = step or (lambda label: contextlib.nullcontext())
    with step("measuring each quantized layer's contribution"):
        ranked = sorted(fmt.candidates(ctx), key=lambda c: -c.contribution)
    result = FallbackResult(
        before,
        before,
        quantized_layers=fmt.quantized_layers(ctx),
        measure=ranked[0].measure if ranked else "",
        size_before=ctx.target.stat().st_size,
        size_after=ctx.target.stat().st_size,
    )
    if not ranked or before.top1_discrepancy == 0:
        return result
    ctx.work.mkdir(parents=True, exist_ok=True)
    tried: dict[int, tuple[Agreement, Path]] = {}

    def trial(k: int) -> Agreement:
        if k not in tried:
            out = ctx.work / f"fallback-{k}{ctx.target.suffix}"
            with step(f"float fallback: the top {k} of {len(ranked)} quantized layers in float"):
                path = fmt.write(ctx, [c.layer for c in ranked[:k]], out)
                now = measure(run_target(path))
            tried[k] = (now, path)
            result.trials.append(Trial(k, now.top1_discrepancy, now.max_abs_diff, str(path)))
        return tried[k][0]

    k, previous = 1, 0
    while True:
        if trial(k).top1_discrepancy == 0:
            break
        if k == len(ranked):
            break
        previous, k = k, min(2 * k, len(ranked))
    if trial(k).top1_discrepancy == 0:
        low, high = previous + 1, k  # the fewest in (previous, k] that still reach 0
        while low < high:
            middle = (low + high) // 2
            if trial(middle).top1_discrepancy == 0:
                high = middle
            else:
                low = middle + 1
        best = high
    else:
        best = min(tried, key=lambda n: (tried[n][0].top1_discrepancy, tried[n][0].max_abs_diff, n))
    agreement, path = tried[best]
    better = agreement.top1_discrepancy < before.top1_discrepancy or (
        agreement.top1_discrepancy == before.top1_discrepancy
        and agreement.max_abs_diff < before.max_abs_diff
    )
    if better:
        result.after = agreement
        result.layers = [c.layer for c in ranked[:best]]
        result.final_file = str(path)
        result.size_after = path.stat().st_size
    return result


__all__ = [
    "FORMATS",
    "Candidate",
    "FallbackContext",
    "FallbackResult",
    "Trial",
    "format_module",
    "search",
]
