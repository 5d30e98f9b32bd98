"""What `convdiff run --localize` does after the run: localize its last artifact.

Why a module of its own: the run orchestrator (:mod:`convdiff.run`) only converts and compares;
this module turns a finished run into a localization of its source artifact against its last
artifact, on the run's own images and preprocessing, reusing the run's worker pool (the
frameworks are imported once). A localization is advice on top of a verdict: its failure is
recorded in the run report (``localization.error``) and never changes the run's exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from convdiff.config import RunConfig
from convdiff.errors import ConvdiffError
from convdiff.preprocess import PreprocessSpec
from convdiff.progress import Progress
from convdiff.report import RunReport
from convdiff.stages.findings import STAGES
from convdiff.workers import WorkerPool


@dataclass
class Localization:
    """The run report's summary of its localization (``report.json: localization``)."""

    out_dir: str = ""
    status: str = "skipped"  # findings | no_finding | crashed | failed | skipped
    findings: dict[str, int] = field(default_factory=dict)  # per stage, faults only
    top: str = ""  # the top finding, one line
    error: str = ""  # why it failed or was skipped


def localize_run(
    report: RunReport, config: RunConfig, pool: WorkerPool, progress: Progress
) -> Localization:
    """Localize ``report``'s source artifact against its last artifact into
    ``<run folder>/localize``; the summary goes into ``report.localization``."""
    from convdiff.localize import localize
    from convdiff.top_finding import best_finding_line

    out = Path(report.out_dir) / "localize"
    localize_config = _localize_config(report, config, out)
    if isinstance(localize_config, str):
        return _record(report, Localization(str(out), "skipped", error=localize_config))
    steps = Progress(stream=progress.stream, enabled=progress.enabled)  # not "[6/5]"
    try:
        result = localize(localize_config, steps, pool)
    except Exception as exc:  # advice on top of a verdict: recorded, never raised
        return _record(report, Localization(str(out), "failed", error=_why(exc)))
    counts = {s: sum(1 for f in result.faults if f.stage == s) for s in STAGES}
    status = "findings" if result.faults else "crashed" if result.crashes else "no_finding"
    if result.error:  # a model TVM cannot import: the inputs and tools stages still ran
        status = "failed"
    summary = Localization(
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
) -> dict[str, Any]:
    """Repair ``report``'s last artifact in ``<run folder>/repair`` (its localization in
    ``repair/localize``); summaries go into ``report.localization`` and ``report.repair``."""
    from convdiff.repair.command import RepairConfig, repair

    out = Path(report.out_dir) / "repair"
    localize_config = _localize_config(report, config, out / "localize")
    if isinstance(localize_config, str):
        _record(report, Localization(str(out / "localize"), "skipped", error=localize_config))
        report.repair = {"status": "skipped", "error": localize_config}
        return report.repair
    target = Path(localize_config.target)
    output = out / f"{target.stem}-repaired{target.suffix}"
    steps = Progress(stream=progress.stream, enabled=progress.enabled)
    try:
        result = repair(RepairConfig(localize_config, output, out), steps, pool)
    except Exception as exc:  # advice on top of a verdict: recorded, never raised
        report.repair = {"status": "failed", "error": _why(exc)}
        report.write(Path(report.out_dir) / "report.json")
        return report.repair
    found = "findings" if result.findings else "no_finding"
    _record(report, Localization(str(out / "localize"), found, result.findings, result.top))
    report.repair = {
        "status": result.status,
        "output": result.output if result.status in ("repaired", "improved") else "",
        "patch": result.patch,
        "before": result.verify.get("before", {}),
        "after": result.verify.get("after", {}),
        "passes": result.passes,
        "error": "",
    }
    report.write(Path(report.out_dir) / "report.json")
    return report.repair


def _localize_config(report: RunReport, config: RunConfig, out: Path) -> Any:
    """The localization of the run's last artifact, or why there is none (a str)."""
    from convdiff.localize import LocalizeConfig

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
        timeout=config.timeout,
        data=config.data,
        labels=config.labels,
        limit=config.limit,
        source_spec=source_spec(report.preprocessing),
        run_report=Path(report.out_dir) / "report.json",
        batch_size=config.batch_size,
    )


def _why(exc: Exception) -> str:
    """A user error as its message; anything else as convdiff's own bug, named as such."""
    if isinstance(exc, ConvdiffError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc} (please report it)"


def source_spec(preprocessing: dict[str, Any]) -> PreprocessSpec | None:
    """The run's source preprocessing (``report.preprocessing``) as a spec again."""
    names = {f.name for f in fields(PreprocessSpec)}
    values = {k: v for k, v in preprocessing.items() if k in names}
    if "size" not in values:
        return None
    for key in ("size", "mean", "std"):
        if key in values:
            values[key] = tuple(values[key])
    return PreprocessSpec(**values)


def _record(report: RunReport, summary: Localization) -> Localization:
    report.localization = summary.__dict__.copy()
    report.write(Path(report.out_dir) / "report.json")
    return summary


def repair_lines(repair: dict[str, Any]) -> list[str]:
    """The run summary's lines about its repair."""
    if not repair:
        return []
    if repair.get("status") in ("skipped", "failed"):
        return [f"repair {repair['status']}: {repair.get('error', '')}"]
    before, after = repair.get("before", {}), repair.get("after", {})
    lines = [
        f"repair: {repair['status']}: top-1 discrepancy {before.get('top1_discrepancy')}% -> "
        f"{after.get('top1_discrepancy')}%, max |diff| {before.get('max_abs_diff', 0):.3g} -> "
        f"{after.get('max_abs_diff', 0):.3g} ({repair.get('passes', {}).get('native', 0)} "
        "inference passes)"
    ]
    if repair.get("output"):
        lines.append(f"  repaired model: {repair['output']}")
    lines.append(f"  patch: {repair.get('patch', '')}")
    return lines


def summary_lines(localization: dict[str, Any]) -> list[str]:
    """The run summary's lines about its localization."""
    if not localization:
        return []
    status, out = localization.get("status"), localization.get("out_dir", "")
    if status in ("skipped", "failed"):
        return [f"localize {status}: {localization.get('error', '')}"]
    counts = localization.get("findings") or {}
    found = ", ".join(f"{n} {stage}" for stage, n in counts.items()) or "no finding"
    lines = [f"localize: {found}"]
    if localization.get("top"):
        lines.append(f"  top finding: {localization['top']}")
    if localization.get("error"):
        lines.append(f"  {localization['error']}")
    lines.append(f"  localize report: {Path(out) / 'report.md'}")
    return lines


__all__ = [
    "Localization",
    "localize_run",
    "repair_lines",
    "repair_run",
    "source_spec",
    "summary_lines",
]
