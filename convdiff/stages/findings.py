"""A finding: one thing the localizer found wrong, where, with its evidence and a repair.

Findings are the common currency of the stages (:mod:`convdiff.stages`): each stage returns a
list of them and the orchestrator orders them by stage. ``source_layer``/``target_layer`` name
the layer in each model file where the file has names (an ONNX node, a TFLite output tensor),
else the canonical layer id; ``evidence`` holds plain JSON numbers (never tensors).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

STAGES = ("inputs", "tools", "weights", "hyperparams", "graph")


@dataclass(frozen=True)
class Finding:
    """One fault (or one piece of agreement evidence, ``kind="agreement"``) a stage found."""

    stage: str  # one of STAGES
    kind: str  # e.g. precision, transposed, pads, epsilon, missing_layer
    source_layer: str | None
    target_layer: str | None
    summary: str  # one line for the terminal
    evidence: dict[str, Any] = field(default_factory=dict)
    suggestion: str = ""
    score: float = 1.0  # how much this finding can explain (ranks the graph stage's suspects)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {STAGES}")

    @classmethod
    def agreement(cls, stage: str, summary: str, evidence: dict[str, Any]) -> Finding:
        """Evidence that the models agree at this stage: reported, but no fault."""
        return cls(stage, "agreement", None, None, summary, evidence)

    @property
    def is_fault(self) -> bool:
        """Agreement evidence (the inputs stage saying both pipelines agree) is no fault, nor
        a latent difference (one the models' function does not show, see :meth:`latent`)."""
        return self.kind != "agreement" and not self.evidence.get("latent")

    def as_latent(self) -> Finding:
        """This difference, marked as one that changes nothing the target computes: the
        segment after it agrees with the source (:mod:`convdiff.ir.segments`). Reported, so
        a user sees it (another input size may expose it), but not a fault."""
        return replace(
            self,
            summary=f"{self.summary} [latent: the target computes the source's values here]",
            evidence={**self.evidence, "latent": True},
            score=0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def ordered(findings: list[Finding]) -> list[Finding]:
    """Stage order first (inputs .. graph), then the stage's own order (stable)."""
    return sorted(findings, key=lambda f: STAGES.index(f.stage))


def jsonable(value: Any) -> Any:
    """Numpy scalars and tuples as plain JSON values, floats rounded to 6 significant digits."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
