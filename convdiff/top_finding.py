"""The one-line answer to "where did this conversion go wrong?" for `check` and `table`.

Why a module of its own: `convdiff check --localize` and `convdiff table --localize` both
localize a finished run's source artifact against its last artifact and keep only the top
finding, as one line next to the verdict. This module does that one thing, through the
public :func:`convdiff.localize.localize` (graph stages only: they need no images), and turns
every failure of it into text, because a localization is advice and must never turn a
verdict into a crash.
"""

from __future__ import annotations

from pathlib import Path

from convdiff.progress import Progress
from convdiff.report import RunReport
from convdiff.stages.findings import Finding

NO_FINDING = "localize: no finding"
FAILED = "localize failed: "
PRIORITY = ("inputs", "weights", "hyperparams", "graph", "tools")


def top_finding(report: RunReport, out: Path, progress: Progress | None = None) -> str:
    """Localize ``report``'s source artifact against its last artifact; one line, never raises.

    ``weights precision at conv -> conv: ...`` (:func:`best_finding_line`), ``localize: no
    finding`` or ``localize failed: <reason>``.
    """
    try:
        from convdiff.localize import GRAPH_STAGES, LocalizeConfig, localize

        hop = report.chain[-1] if report.chain else None
        if report.source is None or hop is None or hop.artifact is None:
            return FAILED + "the run has no source and target model files"
        config = LocalizeConfig(
            source=report.source.path,
            target=hop.artifact.path,
            src=report.source.framework,
            dst=hop.artifact.framework,
            stages=GRAPH_STAGES,  # the graphs alone: no images to run here
            out=out,
        )
        steps = Progress(enabled=False)  # its own steps: not numbered as the run's "[6/5]"
        if progress is not None:
            steps = Progress(stream=progress.stream, enabled=progress.enabled)
        result = localize(config, steps)
    except Exception as exc:  # advice only: a failure is reported, the verdict stands
        return FAILED + _one_line(str(exc) or type(exc).__name__)
    if result.error:
        return FAILED + _one_line(result.error)
    if not result.faults and result.crashes:
        crash = result.crashes[0]
        return FAILED + _one_line(f"stage {crash['stage']} crashed: {crash['message']}")
    return best_finding_line(result.faults) or NO_FINDING


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
    return _one_line(f"{best.stage} {best.kind}{where}: {best.summary}", limit=300)


def _one_line(text: str, limit: int = 200) -> str:
    """The first non-empty line, whitespace collapsed, cut at ``limit`` characters."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    first = " ".join(first.split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


__all__ = ["FAILED", "NO_FINDING", "best_finding_line", "top_finding"]
