"""`convdiff check`: run every conversion of a config file and judge it against its thresholds.

The orchestrator of a check. Each entry is one ordinary `convdiff run`
(:func:`convdiff.commands.run.flow.run`: same pipeline, workers and artifact cache), in its own run
folder under the check's folder; the check only judges the finished report, so a check entry and the
equivalent `convdiff run` agree by construction. One entry's trouble never stops the others: a
converter crash is a finding (CRASH), and a user error that only shows while running, such as a
model file that does not load, is reported on the entry's line (ERROR) instead of ending the check.

Exit code (worst wins, in this order): 2 an entry could not be checked (ERROR; like bad
usage, the suite did not really run), 3 a crash that was not allowed, 1 a threshold exceeded,
0 every entry passed (an allowed crash passes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from convdiff.commands.check.config import CheckConfig, CheckEntry, with_output
from convdiff.commands.check.junit import write_junit
from convdiff.commands.check.render import JUNIT_SUITE, junit_case
from convdiff.commands.check.types import CheckResult, EntryResult
from convdiff.commands.followup import top_finding
from convdiff.commands.run.flow import run as run_conversion
from convdiff.commands.run.types import RunReport
from convdiff.core.errors import ConvdiffError, OutputDirError
from convdiff.core.outdir import prepare_out_dir
from convdiff.core.progress import Progress
from convdiff.core.text import num, one_line, pct


def default_out_dir() -> Path:
    return Path("convdiff-check") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run_check(
    config: CheckConfig,
    out: Path | None = None,
    cache_dir: Path | None = None,
    junit: Path | None = None,
    progress: bool = True,
    on_result: Callable[[EntryResult], None] | None = None,
    stream: TextIO | None = None,
    localize: bool = False,
) -> CheckResult:
    """Run each entry in order and judge it; write check.json (and ``junit``) as it goes.

    ``localize``: localize each FAIL (source artifact against the last artifact, in
    ``<run folder>/localize``) and append its top finding to the entry's line.

    ``on_result`` is called with each entry's result as soon as it is known (the CLI prints
    the line). Progress lines of the runs go to ``stream`` (stderr) unless ``progress`` is off.
    """
    stream = stream or sys.stderr
    folder = prepare_out_dir(out or default_out_dir(), "check")
    if junit is not None:
        _check_writable(junit)
    result = CheckResult(
        config=str(config.path),
        out_dir=str(folder),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    started = time.perf_counter()
    for number, entry in enumerate(config.entries, start=1):
        if progress:
            stream.write(f"== {entry.name} ({number}/{len(config.entries)}) ==\n")
            stream.flush()
        runs = Progress(enabled=progress, stream=stream)
        outcome = check_entry(entry, folder / entry.name, cache_dir, runs, localize)
        result.entries.append(outcome)
        result.seconds = time.perf_counter() - started
        result.write(folder / "check.json")
        if on_result is not None:
            on_result(outcome)
    if junit is not None:
        cases = [junit_case(e) for e in result.entries]
        write_junit(junit, JUNIT_SUITE, cases, timestamp=result.created)
    return result


def check_entry(
    entry: CheckEntry,
    out: Path,
    cache_dir: Path | None,
    progress: Progress | None = None,
    localize: bool = False,
) -> EntryResult:
    """One entry: run it, then judge the report against the entry's thresholds.

    ``localize``: a FAIL also carries the top finding of a localization (a crash has no
    target model to localize); a localization that fails is reported, never raised.
    """
    started = time.perf_counter()
    config = with_output(entry, out, cache_dir).run
    try:
        report = run_conversion(config, progress or Progress(enabled=False))
    except ConvdiffError as exc:
        report_file = out / "report.json"
        return EntryResult(
            name=entry.name,
            verdict="error",
            detail=one_line(str(exc)),
            reason=one_line(str(exc)),
            seconds=time.perf_counter() - started,
            out_dir=str(out.resolve()),
            report=str(report_file.resolve()) if report_file.exists() else None,
            max_top1_discrepancy=entry.max_top1_discrepancy,
            max_abs_diff_allowed=entry.max_abs_diff,
            message=str(exc),
        )
    result = judge(entry, report, time.perf_counter() - started)
    if localize and result.verdict == "fail":
        finding = top_finding(report, Path(report.out_dir) / "localize", progress)
        result = dataclasses.replace(
            result, top_finding=finding, seconds=time.perf_counter() - started
        )
    return result


def judge(entry: CheckEntry, report: RunReport, seconds: float) -> EntryResult:
    """The verdict on a finished run: a crash first, then each threshold."""
    base = EntryResult(
        name=entry.name,
        verdict="pass",
        detail="",
        seconds=seconds,
        out_dir=report.out_dir,
        report=str(Path(report.out_dir) / "report.json"),
        status=report.status,
        top1_discrepancy=report.top1_discrepancy,
        max_abs_diff=report.max_abs_diff,
        max_top1_discrepancy=entry.max_top1_discrepancy,
        max_abs_diff_allowed=entry.max_abs_diff,
    )
    if report.status in ("crash", "incomplete"):
        if report.crashes:
            crash = report.crashes[0]
            detail = f"{crash.stage} {crash.tool}: {one_line(crash.message)}"
            message = "\n".join(
                filter(None, [f"{crash.stage} / {crash.tool} {crash.version}", crash.message])
            )
            if crash.log:
                message += f"\ntool output: {crash.log}"
        else:
            detail = message = "incomplete: the run stopped before the end"
        if entry.allow_crash:
            return dataclasses.replace(
                base,
                verdict="xfail",
                detail=f"{detail}  (allowed by allow_crash)",
                reason=detail,
                message=message,
            )
        return dataclasses.replace(
            base, verdict="crash", detail=detail, reason=detail, message=message
        )
    top1, diff = report.top1_discrepancy, report.max_abs_diff
    allowed_top1, allowed_diff = entry.max_top1_discrepancy, entry.max_abs_diff
    terse: list[str] = []
    failures: list[str] = []
    if not _within(top1, allowed_top1):
        terse.append(f"top-1 {pct(top1)} > {allowed_top1:g}%")
        failures.append(f"top-1 discrepancy {pct(top1)} > {allowed_top1:.1f}%")
    if allowed_diff is not None and not _within(diff, allowed_diff):
        terse.append(f"max|diff| {num(diff)} > {allowed_diff:g}")
        failures.append(f"max abs diff {num(diff)} > {allowed_diff:g}")
    if failures:
        return dataclasses.replace(
            base, verdict="fail", detail="  ".join(terse), failures=tuple(failures)
        )
    detail = f"top-1 {pct(top1)} <= {allowed_top1:g}%  max|diff| {num(diff)}"
    if allowed_diff is not None:
        detail += f" <= {allowed_diff:g}"
    return dataclasses.replace(base, detail=detail)


def _within(value: float | None, allowed: float) -> bool:
    """A missing or NaN figure is not within any bound."""
    return value is not None and not math.isnan(value) and value <= allowed


def _check_writable(path: Path) -> None:
    """Fail before the conversions, not after them, when the JUnit file cannot be written."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
        if not existed:
            path.unlink()  # no empty results file if the check stops before the end
    except OSError as exc:
        raise OutputDirError(
            f"cannot write the JUnit file {path}: {exc.strerror or exc}",
            "pass --junit with a path you can write",
        ) from None


__all__ = ["CheckResult", "EntryResult", "check_entry", "judge", "run_check"]
