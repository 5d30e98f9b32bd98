"""`convdiff check`: run every conversion of a config file and judge it against its thresholds.

The orchestrator of a check. Each entry is one ordinary :func:`convdiff.run.run` (same
pipeline, workers and artifact cache), in its own run folder under the check's folder; the
check only judges the finished report, so a check entry and the equivalent `convdiff run`
agree by construction. One entry's trouble never stops the others: a converter crash is a
finding (CRASH), and a user error that only shows while running, such as a model file that
does not load, is reported on the entry's line (ERROR) instead of ending the check.

Exit code (worst wins, in this order): 2 an entry could not be checked (ERROR; like bad
usage, the suite did not really run), 3 a crash that was not allowed, 1 a threshold exceeded,
0 every entry passed (an allowed crash passes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from convdiff.check_config import CheckConfig, CheckEntry, with_output
from convdiff.errors import ConvdiffError, OutputDirError
from convdiff.junit import JUnitCase, write_junit
from convdiff.progress import Progress
from convdiff.report import RunReport, write_atomic
from convdiff.run import prepare_out_dir
from convdiff.run import run as run_conversion
from convdiff.top_finding import top_finding

VERDICTS = ("pass", "fail", "crash", "xfail", "error")
_LABEL = {"pass": "PASS", "fail": "FAIL", "crash": "CRASH", "xfail": "XFAIL", "error": "ERROR"}
EXIT_FAIL, EXIT_ERROR, EXIT_CRASH = 1, 2, 3
JUNIT_CLASSNAME = "convdiff.check"
JUNIT_SUITE = "convdiff"


@dataclass(frozen=True)
class EntryResult:
    """The verdict on one entry, with the figures it was judged on."""

    name: str
    verdict: str  # pass | fail | crash | xfail (a crash allowed by allow_crash) | error
    detail: str  # what the terminal line says after the name
    seconds: float
    out_dir: str  # the entry's run folder
    report: str | None = None  # its report.json, None when the run wrote none
    status: str | None = None  # the run report's status
    top1_discrepancy: float | None = None
    max_abs_diff: float | None = None
    max_top1_discrepancy: float = 0.0
    max_abs_diff_allowed: float | None = None
    failures: tuple[str, ...] = ()  # one line per threshold exceeded
    reason: str = ""  # the crash or error in one line
    message: str = ""  # the crash or error in full
    top_finding: str = ""  # --localize on a FAIL: the top finding (convdiff.top_finding)

    @property
    def line(self) -> str:
        """``PASS name  top-1 0.0% <= 0%  max|diff| 2.1e-06``."""
        return f"{_LABEL[self.verdict]} {self.name}  {self.detail}{self._finding}"

    @property
    def _finding(self) -> str:
        return f"  | {self.top_finding}" if self.top_finding else ""

    @property
    def passed(self) -> bool:
        return self.verdict in ("pass", "xfail")

    def junit_case(self) -> JUnitCase:
        stdout = f"report: {self.report}" if self.report else f"run folder: {self.out_dir}"
        common = {"name": self.name, "classname": JUNIT_CLASSNAME, "seconds": self.seconds}
        if self.verdict == "fail":
            return JUnitCase(
                **common,
                outcome="failure",
                message="; ".join(self.failures) + self._finding,
                kind="threshold",
                details=self._figures(),
                stdout=stdout,
            )
        if self.verdict in ("crash", "error"):
            kind = "crash" if self.verdict == "crash" else "ConvdiffError"
            return JUnitCase(
                **common,
                outcome="error",
                message=self.reason,
                kind=kind,
                details=self.message,
                stdout=stdout,
            )
        if self.verdict == "xfail":
            return JUnitCase(
                **common,
                outcome="skipped",
                message=f"crash allowed by allow_crash: {self.reason}",
                details=self.message,
                stdout=stdout,
            )
        return JUnitCase(**common, stdout=stdout)

    def _figures(self) -> str:
        bound = "not bounded" if self.max_abs_diff_allowed is None else self.max_abs_diff_allowed
        return (
            f"top-1 discrepancy: {_pct(self.top1_discrepancy)} "
            f"(allowed {self.max_top1_discrepancy:g}%)\n"
            f"max abs diff: {_num(self.max_abs_diff)} (allowed: {bound})\n"
            f"report: {self.report}"
        )


@dataclass
class CheckResult:
    """Every entry's verdict; truthy when the check passed. check.json is its JSON."""

    config: str
    out_dir: str
    created: str = ""
    entries: list[EntryResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, verdict: str) -> int:
        return sum(e.verdict == verdict for e in self.entries)

    @property
    def exit_code(self) -> int:
        for verdict, code in (("error", EXIT_ERROR), ("crash", EXIT_CRASH), ("fail", EXIT_FAIL)):
            if self.count(verdict):
                return code
        return 0

    def __bool__(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        """``3 passed, 1 failed, 0 crashed in 74 s (run folders in DIR)``."""
        parts = [
            f"{self.count('pass')} passed",
            f"{self.count('fail')} failed",
            f"{self.count('crash')} crashed",
        ]
        if xfailed := self.count("xfail"):
            parts.append(f"{xfailed} allowed crash" + ("es" if xfailed > 1 else ""))
        if errors := self.count("error"):
            parts.append(f"{errors} error" + ("s" if errors > 1 else ""))
        return f"{', '.join(parts)} in {self.seconds:.0f} s (run folders in {self.out_dir})"

    def to_dict(self) -> dict[str, Any]:
        counts = {verdict: self.count(verdict) for verdict in VERDICTS}
        return {
            **dataclasses.asdict(self),
            "counts": counts,
            "exit_code": self.exit_code,
        }

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")


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
        cases = [e.junit_case() for e in result.entries]
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
            detail=_one_line(str(exc)),
            reason=_one_line(str(exc)),
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
            detail = f"{crash.stage} {crash.tool}: {_one_line(crash.message)}"
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
        terse.append(f"top-1 {_pct(top1)} > {allowed_top1:g}%")
        failures.append(f"top-1 discrepancy {_pct(top1)} > {allowed_top1:.1f}%")
    if allowed_diff is not None and not _within(diff, allowed_diff):
        terse.append(f"max|diff| {_num(diff)} > {allowed_diff:g}")
        failures.append(f"max abs diff {_num(diff)} > {allowed_diff:g}")
    if failures:
        return dataclasses.replace(
            base, verdict="fail", detail="  ".join(terse), failures=tuple(failures)
        )
    detail = f"top-1 {_pct(top1)} <= {allowed_top1:g}%  max|diff| {_num(diff)}"
    if allowed_diff is not None:
        detail += f" <= {allowed_diff:g}"
    return dataclasses.replace(base, detail=detail)


def _within(value: float | None, allowed: float) -> bool:
    """A missing or NaN figure is not within any bound."""
    return value is not None and not math.isnan(value) and value <= allowed


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _one_line(text: str, limit: int = 200) -> str:
    """The first non-empty line, whitespace collapsed, cut at ``limit`` characters."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    first = " ".join(first.split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


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
