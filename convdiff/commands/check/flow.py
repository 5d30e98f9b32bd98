"""`convdiff check`: run every conversion of a config file and judge it against its thresholds.

The orchestrator of a check. Each entry is one ordinary `convdiff run`
(:func:`convdiff.commands.run.flow.run`: same pipeline, workers and artifact cache), in its own run
folder under the check's folder; the check only judges the finished report, so a check entry and the
equivalent `convdiff run` agree by construction. One entry's trouble never stops the others: a
converter crash is a finding (CRASH), and a user error that only shows while running, such as a
model file that does not load, is reported on the entry's line (ERROR) instead of ending the check.

With ``executor="ray"`` every entry is a task on a Ray cluster (:mod:`convdiff.runtime.ray_jobs`),
the entries of one model and source one after another; the verdicts still come in entry order.
An entry whose Ray worker died is a CRASH saying so, whatever ``allow_crash`` says: that is the
cluster failing, not the known crash of a converter.

Exit code (worst wins, in this order): 2 an entry could not be checked (ERROR; like bad
usage, the suite did not really run), 3 a crash that was not allowed, 1 a threshold exceeded,
0 every entry passed (an allowed crash passes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
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
from convdiff.converters import find_chain
from convdiff.core.errors import ConvdiffError, OutputDirError
from convdiff.core.jobs import Interrupted, Job, estimate_gb
from convdiff.core.outdir import prepare_out_dir
from convdiff.core.progress import Progress
from convdiff.core.text import num, one_line, pct
from convdiff.runtime import ray_jobs
from convdiff.runtime.pool import WorkerPool
from convdiff.zoo import is_zoo_name


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
    executor: str = "local",
    address: str | None = None,
) -> CheckResult:
    """Run each entry in order and judge it; write check.json (and ``junit``) as it goes.

    ``executor="ray"``: the entries run as Ray tasks on the cluster at ``address`` (None: a
    local one); ``on_result`` still sees them in entry order, and the runs print no progress.

    ``localize``: localize each FAIL (source artifact against the last artifact, in
    ``<run folder>/localize``) and append its top finding to the entry's line.

    ``on_result`` is called with each entry's result as soon as it is known (the CLI prints
    the line). Progress lines of the runs go to ``stream`` (stderr) unless ``progress`` is off.
    """
    stream = stream or sys.stderr
    if executor not in ("local", "ray"):
        raise ConvdiffError(f"unknown --executor {executor!r}", "use local or ray")
    if address is not None and executor != "ray":
        raise ConvdiffError("--address names a Ray cluster", "add --executor ray")
    if executor == "ray":  # before the check folder exists: a usage error leaves none
        ray_jobs.import_ray()
        if address:
            ray_jobs.check_address(address)
        cache_dir = cache_dir.expanduser().resolve() if cache_dir is not None else None
    folder = prepare_out_dir(out or default_out_dir(), "check")
    if junit is not None:
        _check_writable(junit)
    result = CheckResult(
        config=str(config.path),
        out_dir=str(folder),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    started = time.perf_counter()
    if executor == "ray":
        _run_on_ray(config, folder, cache_dir, localize, address, result, started, on_result)
    for number, entry in enumerate(config.entries if executor == "local" else (), start=1):
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


def _run_on_ray(
    config: CheckConfig,
    folder: Path,
    cache_dir: Path | None,
    localize: bool,
    address: str | None,
    result: CheckResult,
    started: float,
    on_result: Callable[[EntryResult], None] | None,
) -> None:
    """The entries as Ray tasks; each verdict is recorded (check.json, ``on_result``) once
    every entry before it has one, so the lines and the file keep the config's order."""
    entries = [(number, _shared_paths(entry)) for number, entry in enumerate(config.entries)]
    work = [Job(item, _group(item[1]), _estimate_gb(item[1])) for item in entries]
    verdicts: dict[int, EntryResult] = {}

    def record(job: Job[tuple[int, CheckEntry]], outcome: EntryResult) -> None:
        verdicts[job.item[0]] = outcome
        while len(result.entries) in verdicts:
            result.entries.append(verdicts[len(result.entries)])
            result.seconds = time.perf_counter() - started
            result.write(folder / "check.json")
            if on_result is not None:
                on_result(result.entries[-1])

    try:
        ray_jobs.run_jobs_on_ray(
            work,
            functools.partial(ray_entry, folder, cache_dir, localize),
            on_lost=functools.partial(lost_entry, folder),
            address=address,
            on_done=record,
            name=lambda item: f"convdiff-check {item[1].name}",
        )
    except Interrupted:  # keep every verdict that came, in entry order, then stop as locally
        result.entries = [verdicts[n] for n in sorted(verdicts)]
        result.seconds = time.perf_counter() - started
        result.write(folder / "check.json")
        raise KeyboardInterrupt from None


def _shared_paths(entry: CheckEntry) -> CheckEntry:
    """The entry with its files as absolute paths: a task runs on some node, in some working
    directory (the paths must also be on a filesystem every node sees)."""
    run = entry.run
    model = Path(run.model).expanduser()
    data, labels = (
        None if p is None else Path(p).expanduser().resolve() for p in (run.data, run.labels)
    )
    shared = dataclasses.replace(
        run,
        model=str(model.resolve()) if model.exists() else run.model,
        data=data,
        labels=labels,
    )
    return dataclasses.replace(entry, run=shared)


def _group(entry: CheckEntry) -> str:
    """Entries that share cache entries (same model and source) run one after another."""
    return f"{entry.run.model}/{entry.run.src}"


def _estimate_gb(entry: CheckEntry) -> float:
    """The entry's peak memory by the table's estimates, from the tools of its chain."""
    run = entry.run
    try:
        tools = [hop.tool for hop in find_chain(run.src, run.dst, run.via, run.convert)]
    except ConvdiffError:  # the run itself reports it; its estimate does not matter
        tools = []
    return estimate_gb(run.model, tools, is_file=not is_zoo_name(run.model))


def ray_entry(
    folder: Path, cache_dir: Path | None, localize: bool, item: tuple[int, CheckEntry]
) -> EntryResult:
    """One entry as a Ray task runs it on a node; on ``ray.cancel`` its workers die with it."""
    entry = item[1]
    try:
        return check_entry(entry, folder / entry.name, cache_dir, None, localize)
    except KeyboardInterrupt:
        WorkerPool.kill_all()
        raise


def lost_entry(folder: Path, item: tuple[int, CheckEntry], reason: str) -> EntryResult:
    """An entry whose Ray worker died without a verdict: a CRASH that says so."""
    entry = item[1]
    return EntryResult(
        name=entry.name,
        verdict="crash",
        detail=reason,
        seconds=0.0,
        out_dir=str(folder / entry.name),
        max_top1_discrepancy=entry.max_top1_discrepancy,
        max_abs_diff_allowed=entry.max_abs_diff,
        reason=reason,
        message=reason,
    )


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


__all__ = [
    "CheckResult",
    "EntryResult",
    "check_entry",
    "judge",
    "lost_entry",
    "ray_entry",
    "run_check",
]
