"""The run report: typed results that serialize to a versioned JSON, a stable interface.

report.json is read by scripts and CI jobs, so its top-level keys only ever grow; a change
that renames or removes a key bumps ``SCHEMA_VERSION``. Tensors never go into it: outputs
live beside it as .npz files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convdiff.metrics import PairMetrics

SCHEMA_VERSION = 1
STATUSES = ("ok", "discrepancy", "crash", "incomplete")  # incomplete: interrupted


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
class Hop:
    """One converter edge of the chain and how its output agrees with the source model."""

    index: int  # 1-based; hop i converts artifact i-1 into artifact i
    src: str
    dst: str
    tool: str
    version: str
    options: dict[str, Any]
    artifact: Artifact | None = None
    convert_seconds: float | None = None
    agreement: PairMetrics | None = None  # this artifact against the *source* model
    crash: Crash | None = None


@dataclass(frozen=True)
class Phase:
    """Time and memory of one phase; ``work_seconds`` is what the framework itself spent."""

    seconds: float = 0.0
    work_seconds: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class RunReport:
    model: str
    src: str
    dst: str
    status: str = "incomplete"  # ok | discrepancy | crash | incomplete (see STATUSES)
    partial: bool = True  # True until every hop of the route has been compared
    schema_version: int = SCHEMA_VERSION
    convdiff_version: str = ""
    created: str = ""
    out_dir: str = ""
    route: list[str] = field(default_factory=list)  # frameworks from source to target
    source: Artifact | None = None
    weights: dict[str, str] = field(default_factory=dict)  # policy, used, detail
    preprocessing: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # source, images, skipped, labelled
    chain: list[Hop] = field(default_factory=list)
    images: int = 0
    top1_discrepancy: float | None = None
    top5_discrepancy: float | None = None
    kendall_tau_top5: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    src_accuracy: float | None = None
    dst_accuracy: float | None = None
    disagreeing: list[dict[str, Any]] = field(default_factory=list)
    first_disagreeing_hop: int | None = None
    max_discrepancy: float = 0.0
    crashes: list[Crash] = field(default_factory=list)
    timings: dict[str, Phase] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # --localize: what the localization found (convdiff.followup.Localization)
    localization: dict[str, Any] = field(default_factory=dict)
    # --repair: the verified repair of the last artifact (convdiff.followup.repair_run)
    repair: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.status == "ok"

    @property
    def exit_code(self) -> int:
        """0 agreement within the threshold, 1 discrepancy above it, 3 crash or incomplete."""
        return {"ok": 0, "discrepancy": 1}.get(self.status, 3)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> RunReport:
        return from_dict(cls, json.loads(text))

    def write(self, path: Path) -> None:
        """Write atomically: a reader never sees half a report."""
        write_atomic(path, self.to_json() + "\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def from_dict(cls: type, data: Any) -> Any:
    """Rebuild a (nested) dataclass from what ``dataclasses.asdict`` made of it."""
    return _build(cls, data)


def _build(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], data) if len(inner) == 1 else data
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: _build(hints[k], v) for k, v in data.items() if k in names})
    if origin is tuple:
        item = args[0] if args else Any
        return tuple(_build(item, v) for v in data)
    if origin is list:
        return [_build(args[0], v) for v in data]
    if origin is dict and len(args) == 2:
        return {k: _build(args[1], v) for k, v in data.items()}
    return data
