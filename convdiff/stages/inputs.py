"""Stage 0, inputs: does the disagreement come from the inputs rather than from the model?

Before any layer is blamed, the orchestrator (:func:`convdiff.commands.localize.runs.measure_runs`)
runs the target twice on the same images: once on exactly the source's tensors (only the layout
changed at the model's boundary) and once on its own framework's customary preprocessing. Each run
is compared with the source's outputs. The target's own pipeline adding top-1 disagreement that the
source's tensors do not show is an ``inputs`` fault no model patch can remove (the published study
saw 32-86% top-1 discrepancy from preprocessing alone): the finding states both pipelines and the
fields to change. Pure: it reads ``ctx.evidence["inputs"]``."""

from __future__ import annotations

from typing import Any

from convdiff.stages import StageContext
from convdiff.stages.findings import Finding, jsonable

# the fields of a PreprocessSpec that change pixels (layout is applied at the model boundary)
PIXEL_FIELDS = ("size", "resize", "crop_fraction", "mean", "std", "channels", "interpolation")
DEFAULTS = {"interpolation": "bilinear"}  # fields that reports written before them lack


def run(ctx: StageContext) -> list[Finding]:
    if (
        "error" in ctx.evidence["inputs"]
    ):  # a model did not run: this stage cannot judge (recorded as a crash)
        raise RuntimeError(ctx.evidence["inputs"]["error"])
    return findings(ctx.evidence["inputs"])


def findings(evidence: dict[str, Any]) -> list[Finding]:
    """One ``preprocessing`` fault when the target's own pipeline costs top-1 agreement, else
    one ``agreement`` (no fault) saying both pipelines were compared and what they are."""
    source = {**DEFAULTS, **evidence["source_spec"]}
    target = {**DEFAULTS, **evidence["target_spec"]}
    same = evidence["same_tensors"]
    own = evidence.get("own_preprocessing")
    changed = differing_fields(source, target)
    base = {
        "source_preprocessing": source["description"],
        "target_preprocessing": target["description"],
        "target_origin": target.get("origin", ""),
        "differing": {k: [source[k], target[k]] for k in changed},
        "images": same["images"],
        "top1_on_source_tensors": same["top1_discrepancy"],
    }
    if own is None or not changed:
        return [
            Finding.agreement(
                "inputs",
                f"the target's preprocessing is the source's ({source['description']}): the "
                "inputs explain no disagreement",
                jsonable(base),
            )
        ]
    gap = own["top1_discrepancy"] - same["top1_discrepancy"]
    evidence_out = jsonable({**base, "top1_on_own_preprocessing": own["top1_discrepancy"]})
    if gap <= 0:
        return [
            Finding.agreement(
                "inputs",
                f"the target's own preprocessing ({target['description']}) changes no top-1 "
                f"agreement against the source's ({source['description']}) on "
                f"{same['images']} images",
                evidence_out,
            )
        ]
    return [
        Finding(
            "inputs",
            "preprocessing",
            None,
            None,
            f"preprocessing costs {gap:.4g} points of top-1: the target disagrees with the source "
            f"on {own['top1_discrepancy']:.4g}% of {same['images']} images on its own "
            f"preprocessing ({target['description']}), on {same['top1_discrepancy']:.4g}% on "
            f"the source's tensors ({source['description']})",
            evidence_out,
            "feed the target the source's preprocessing: "
            + "; ".join(f"{k} {_show(target[k])} -> {_show(source[k])}" for k in changed),
            score=gap / 100,
        )
    ]


def differing_fields(source: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """The pixel-changing fields whose values differ (``crop_fraction`` only when cropping)."""
    changed = []
    for key in PIXEL_FIELDS:
        a, b = source.get(key, DEFAULTS.get(key)), target.get(key, DEFAULTS.get(key))
        if key == "crop_fraction" and "center-crop" not in (source["resize"], target["resize"]):
            continue
        if isinstance(a, list | tuple):
            if len(a) != len(b) or any(
                abs(float(x) - float(y)) > 1e-9 for x, y in zip(a, b, strict=True)
            ):
                changed.append(key)
        elif a != b:
            changed.append(key)
    return changed


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["differing_fields", "findings", "run"]
