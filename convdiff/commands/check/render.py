"""How a check reads: one line per entry, the closing summary, the JUnit test cases."""

from __future__ import annotations

from convdiff.commands.check.junit import JUnitCase
from convdiff.commands.check.types import CheckResult, EntryResult
from convdiff.core.text import num, pct

_LABEL = {"pass": "PASS", "fail": "FAIL", "crash": "CRASH", "xfail": "XFAIL", "error": "ERROR"}
JUNIT_CLASSNAME = "convdiff.check"  # what CI dashboards have grouped the cases by
JUNIT_SUITE = "convdiff"


def entry_line(entry: EntryResult) -> str:
    """``PASS name  top-1 0.0% <= 0%  max|diff| 2.1e-06``."""
    return f"{_LABEL[entry.verdict]} {entry.name}  {entry.detail}{_finding(entry)}"


def summary(result: CheckResult) -> str:
    """``3 passed, 1 failed, 0 crashed in 74 s (run folders in DIR)``."""
    parts = [
        f"{result.count('pass')} passed",
        f"{result.count('fail')} failed",
        f"{result.count('crash')} crashed",
    ]
    if xfailed := result.count("xfail"):
        parts.append(f"{xfailed} allowed crash" + ("es" if xfailed > 1 else ""))
    if errors := result.count("error"):
        parts.append(f"{errors} error" + ("s" if errors > 1 else ""))
    return f"{', '.join(parts)} in {result.seconds:.0f} s (run folders in {result.out_dir})"


def junit_case(entry: EntryResult) -> JUnitCase:
    """The entry as a JUnit test case: a FAIL a failure, a CRASH or ERROR an error, an
    allowed crash skipped."""
    stdout = f"report: {entry.report}" if entry.report else f"run folder: {entry.out_dir}"
    common = {"name": entry.name, "classname": JUNIT_CLASSNAME, "seconds": entry.seconds}
    if entry.verdict == "fail":
        return JUnitCase(
            **common,
            outcome="failure",
            message="; ".join(entry.failures) + _finding(entry),
            kind="threshold",
            details=_figures(entry),
            stdout=stdout,
        )
    if entry.verdict in ("crash", "error"):
        kind = "crash" if entry.verdict == "crash" else "ConvdiffError"
        return JUnitCase(
            **common,
            outcome="error",
            message=entry.reason,
            kind=kind,
            details=entry.message,
            stdout=stdout,
        )
    if entry.verdict == "xfail":
        return JUnitCase(
            **common,
            outcome="skipped",
            message=f"crash allowed by allow_crash: {entry.reason}",
            details=entry.message,
            stdout=stdout,
        )
    return JUnitCase(**common, stdout=stdout)


def _finding(entry: EntryResult) -> str:
    return f"  | {entry.top_finding}" if entry.top_finding else ""


def _figures(entry: EntryResult) -> str:
    bound = "not bounded" if entry.max_abs_diff_allowed is None else entry.max_abs_diff_allowed
    return (
        f"top-1 discrepancy: {pct(entry.top1_discrepancy)} "
        f"(allowed {entry.max_top1_discrepancy:g}%)\n"
        f"max abs diff: {num(entry.max_abs_diff)} (allowed: {bound})\n"
        f"report: {entry.report}"
    )


__all__ = ["JUNIT_CLASSNAME", "JUNIT_SUITE", "entry_line", "junit_case", "summary"]
