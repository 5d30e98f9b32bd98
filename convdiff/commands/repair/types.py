"""`convdiff repair`'s config and report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convdiff.commands.localize.types import LocalizeConfig
from convdiff.core.jsonio import JsonResult


@dataclass(frozen=True)
class RepairConfig:
    """One `convdiff repair`: the localization to run (its ``out`` is set here) and where the
    repaired model goes."""

    localize: LocalizeConfig
    output: Path  # the repaired model file (never the target itself)
    out: Path | None = None  # work folder; None = ./convdiff-runs/repair-<target>-<time>


@dataclass
class RepairReport(JsonResult):
    source: str
    target: str
    output: str
    out_dir: str
    status: str = "unchanged"  # repaired | improved | unchanged | nothing_to_repair
    schema_version: int = 1
    convdiff_version: str = ""
    created: str = ""
    findings: dict[str, int] = field(default_factory=dict)  # localized faults per stage
    top: str = ""  # the top localized finding, one line
    patch: str = ""
    edits: list[str] = field(default_factory=list)  # the diff view of the verified patch
    verify: dict[str, Any] = field(default_factory=dict)  # before, after, steps, passes
    passes: dict[str, int] = field(default_factory=dict)  # inference passes over the images
    # a quantized target's float fallback (repair.fallback.FallbackResult.to_json); {} otherwise
    fallback: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 the target agrees with the source (repaired, or already), 1 a discrepancy
        remains."""
        if self.fallback:  # a quantized model keeps its rounding: its labels are the verdict
            top1 = self.fallback["top1_after" if self.fallback["float_layers"] else "top1_before"]
            return 0 if top1 == 0 else 1
        return 0 if self.verify.get("after", {}).get("agrees") else 1


__all__ = ["RepairConfig", "RepairReport"]
