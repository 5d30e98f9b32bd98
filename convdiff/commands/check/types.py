"""`convdiff check`'s results: one verdict per entry and the check's (check.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convdiff.core.jsonio import JsonResult

VERDICTS = ("pass", "fail", "crash", "xfail", "error")
EXIT_FAIL, EXIT_ERROR, EXIT_CRASH = 1, 2, 3


@dataclass(frozen=True)
class EntryResult(JsonResult):
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
    top_finding: str = ""  # --localize on a FAIL: the top finding (convdiff.stages.ranking)

    @property
    def passed(self) -> bool:
        return self.verdict in ("pass", "xfail")


@dataclass
class CheckResult(JsonResult):
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

    def to_dict(self) -> dict[str, Any]:
        counts = {verdict: self.count(verdict) for verdict in VERDICTS}
        return {**super().to_dict(), "counts": counts, "exit_code": self.exit_code}


__all__ = ["EXIT_CRASH", "EXIT_ERROR", "EXIT_FAIL", "VERDICTS", "CheckResult", "EntryResult"]
