"""The finding that explains most: the one line `check` and `table` print beside a verdict,
and the top finding a run's localization and a repair report.

Why in stages/: ranking reads findings only (pure data, like the stages that make them); the
command that localizes and then ranks lives above (:func:`convdiff.commands.followup.top_finding`).
"""

from __future__ import annotations

from convdiff.core.text import one_line
from convdiff.stages.findings import Finding

NO_FINDING = "localize: no finding"
FAILED = "localize failed: "
PRIORITY = ("inputs", "weights", "hyperparams", "graph", "tools")


def best_finding_line(faults: list[Finding]) -> str:
    """The finding that explains most, as one line (``weights precision at conv -> conv: ...``;
    empty when there is none): the highest score among the findings of the first stage in
    :data:`PRIORITY` that has any (the first in stage order on a tie). Tools and activation
    findings say which tool or where outputs part; the inputs, weights and hyperparameter
    findings say what to change, so they speak first."""
    if not faults:
        return ""
    rank = {stage: i for i, stage in enumerate(PRIORITY)}
    first = min(rank.get(f.stage, len(rank)) for f in faults)
    candidates = [f for f in faults if rank.get(f.stage, len(rank)) == first]
    best = max(candidates, key=lambda f: f.score)  # max keeps the first of equal scores
    where = ""
    if best.source_layer or best.target_layer:
        where = f" at {best.source_layer or '-'} -> {best.target_layer or '-'}"
    return one_line(f"{best.stage} {best.kind}{where}: {best.summary}", limit=300)


__all__ = ["FAILED", "NO_FINDING", "PRIORITY", "best_finding_line"]
