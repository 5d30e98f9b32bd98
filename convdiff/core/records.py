"""Records every command shares: a model file of a run, a crash, the cost of a phase.

Why in core: a crash is data in every command (run, table, check, the crash hints), and an
artifact is what a run hands to localize and repair; none of them should import another
command's report module to name these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Crash:
    """A converter or runtime that failed: a finding, not an end of convdiff."""

    stage: str  # build | convert | load | infer
    tool: str
    version: str
    message: str
    failure: str = "exception"  # exception | died | timeout | memory
    hop: int | None = None  # index of the chain hop, 0 = the source model
    log: str = ""  # worker log with the tool's own output
    hint: str = ""  # known cause and way around it (convdiff.hints), when convdiff knows one


@dataclass(frozen=True)
class Artifact:
    """A model file of the run: the source (hop 0) or a converter's output."""

    framework: str
    path: str
    input_shape: tuple[int | None, ...] = ()
    layout: str = ""
    cached: bool = False


@dataclass(frozen=True)
class Phase:
    """Time and memory of one phase; ``work_seconds`` is what the framework itself spent."""

    seconds: float = 0.0
    work_seconds: float = 0.0
    peak_rss_mb: float = 0.0


__all__ = ["Artifact", "Crash", "Phase"]
