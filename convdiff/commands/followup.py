"""What comes after a run: `convdiff run --localize / --repair`, and the one-line top finding
that `check --localize` and `table --localize` print beside a verdict.

Why a module of its own: the run orchestrator (:mod:`convdiff.commands.run.flow`) only converts
and compares; this module turns a finished run into a localization (or a repair) of its source
artifact against its last artifact, on the run's own images and preprocessing, reusing the
run's worker pool (the frameworks are imported once). A localization is advice on top of a
verdict: its failure is recorded in the run report (``localization.error``) and never changes
the run's exit code.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from convdiff.commands.localize.flow import localize
from convdiff.commands.localize.types import GRAPH_STAGES, LocalizeConfig
from convdiff.commands.repair.flow import repair
from convdiff.commands.repair.types import RepairConfig
from convdiff.commands.run import flow
from convdiff.commands.run.render import write_markdown
from convdiff.commands.run.types import (
    LocalizationSummary,
    RepairSummary,
    RunConfig,
    RunReport,
)
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import ImageOptions, WorkerOptions, group_of
from convdiff.core.progress import Progress
from convdiff.core.text import one_line
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.runtime.pool import WorkerPool
from convdiff.stages.findings import STAGES
from convdiff.stages.ranking import FAILED, NO_FINDING, best_finding_line


def run(
    config: RunConfig, progress: Progress | None = None, pool: WorkerPool | None = None
) -> RunReport:
    """`convdiff run`: the conversion check (:func:`convdiff.commands.run.flow.run`), then, as
    ``config`` asks, the localization or repair of its last artifact on the same workers
    (``pool``, when given, else the run's own)."""
    if not (config.localize or config.repair):
        return flow.run(config, progress, pool=pool)

    def then(report: RunReport, pool: WorkerPool, steps: Progress) -> None:
        if config.repair:
            repair_run(report, config, pool, steps)
        else:
            localize_run(report, config, pool, steps)
        write_markdown(report, Path(report.out_dir) / "report.md")

    return flow.run(config, progress, then, pool)


def localize_run(
    report: RunReport, config: RunConfig, pool: WorkerPool, progress: Progress
) -> LocalizationSummary:
    """Localize ``report``'s source artifact against its last artifact into
    ``<run folder>/localize``; the summary goes into ``report.localization``."""
    out = Path(report.out_dir) / "localize"
    localize_config = _localize_config(report, config, out)
    if isinstance(localize_config, str):
        return _record(report, LocalizationSummary(str(out), "skipped", error=localize_config))
    steps = Progress(stream=progress.stream, enabled=progress.enabled)  # not "[6/5]"
    try:
        result = localize(localize_config, steps, pool)
    except Exception as exc:  # advice on top of a verdict: recorded, never raised
        return _record(report, LocalizationSummary(str(out), "failed", error=_why(exc)))
    counts = {s: sum(1 for f in result.faults if f.stage == s) for s in STAGES}
    status = "findings" if result.faults else "crashed" if result.crashes else "no_finding"
    if result.error:  # a model TVM cannot import: the inputs and tools stages still ran
        status = "failed"
    summary = LocalizationSummary(
        str(out),
        status,
        {s: n for s, n in counts.items() if n},
        best_finding_line(result.faults),
        result.error
        or "; ".join(f"stage {c['stage']} crashed: {c['message']}" for c in result.crashes),
    )
    return _record(report, summary)


def repair_run(
    report: RunReport, config: RunConfig, pool: WorkerPool, progress: Progress
) -> RepairSummary:
    """Repair ``report``'s last artifact in ``<run folder>/repair`` (its localization in
    ``repair/localize``); summaries go into ``report.localization`` and ``report.repair``."""
    out = Path(report.out_dir) / "repair"
    localize_config = _localize_config(report, config, out / "localize")
    if isinstance(localize_config, str):
        _record(
            report, LocalizationSummary(str(out / "localize"), "skipped", error=localize_config)
        )
        return _record_repair(report, RepairSummary("skipped", error=localize_config))
    target = Path(localize_config.target)
    output = out / f"{target.stem}-repaired{target.suffix}"
    steps = Progress(stream=progress.stream, enabled=progress.enabled)
    try:
        result = repair(RepairConfig(localize_config, output, out), steps, pool)
    except Exception as exc:  # advice on top of a verdict: recorded, never raised
        return _record_repair(report, RepairSummary("failed", error=_why(exc)))
    found = "findings" if result.findings else "no_finding"
    _record(report, LocalizationSummary(str(out / "localize"), found, result.findings, result.top))
    return _record_repair(
        report,
        RepairSummary(
            status=result.status,
            output=result.output if result.status in ("repaired", "improved") else "",
            patch=result.patch,
            before=result.verify.get("before", {}),
            after=result.after(),
            passes=result.passes,
            fallback=result.fallback,
        ),
    )


def top_finding(report: RunReport, out: Path, progress: Progress | None = None) -> str:
    """Localize ``report``'s source artifact against its last artifact (graph stages only: no
    images to run here) and keep the top finding as one line; never raises.

    ``weights precision at conv -> conv: ...`` (:func:`best_finding_line`), ``localize: no
    finding`` or ``localize failed: <reason>``: a localization is advice and must never turn
    a verdict into a crash.
    """
    try:
        hop = report.chain[-1] if report.chain else None
        if report.source is None or hop is None or hop.artifact is None:
            return FAILED + "the run has no source and target model files"
        config = LocalizeConfig(
            source=report.source.path,
            target=hop.artifact.path,
            src=report.source.framework,
            dst=hop.artifact.framework,
            stages=GRAPH_STAGES,
            out=out,
        )
        steps = Progress(enabled=False)  # its own steps: not numbered as the run's "[6/5]"
        if progress is not None:
            steps = Progress(stream=progress.stream, enabled=progress.enabled)
        result = localize(config, steps)
    except Exception as exc:  # advice only: a failure is reported, the verdict stands
        return FAILED + one_line(str(exc) or type(exc).__name__)
    if result.error:
        return FAILED + one_line(result.error)
    if not result.faults and result.crashes:
        crash = result.crashes[0]
        return FAILED + one_line(f"stage {crash['stage']} crashed: {crash['message']}")
    return best_finding_line(result.faults) or NO_FINDING


def _localize_config(report: RunReport, config: RunConfig, out: Path) -> LocalizeConfig | str:
    """The localization of the run's last artifact, or why there is none (a str)."""
    target = report.chain[-1].artifact if report.chain else None
    if report.source is None or target is None:
        if report.crashes:
            crash = report.crashes[-1]
            return f"the run crashed in {crash.tool} ({crash.stage}): the crash is the finding"
        return "the run made no target model to localize"
    return LocalizeConfig(
        source=report.source.path,
        target=target.path,
        src=report.source.framework,
        dst=target.framework,
        stages=STAGES,
        out=out,
        **asdict(group_of(ImageOptions, config)),
        **asdict(group_of(WorkerOptions, config)),
        source_spec=PreprocessSpec.from_report(report.preprocessing),
        run_report=Path(report.out_dir) / "report.json",
        trust_model_code=config.trust_model_code,
    )


def _why(exc: Exception) -> str:
    """A user error as its message; anything else as convdiff's own bug, named as such."""
    if isinstance(exc, ConvdiffError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc} (please report it)"


def _record(report: RunReport, summary: LocalizationSummary) -> LocalizationSummary:
    report.localization = summary
    report.write(Path(report.out_dir) / "report.json")
    return summary


def _record_repair(report: RunReport, summary: RepairSummary) -> RepairSummary:
    report.repair = summary
    report.write(Path(report.out_dir) / "report.json")
    return summary


__all__ = ["localize_run", "repair_run", "run", "top_finding"]
