"""`convdiff run`'s config and report: typed results that serialize to a versioned JSON.

report.json is read by scripts and CI jobs, so its top-level keys only ever grow; a change
that renames or removes a key bumps ``SCHEMA_VERSION``. Tensors never go into it: each hop's
per-image records (top-5 labels and scores of both sides, distances) live beside it in
``outputs/<hop>-<framework>.npy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convdiff.core.jsonio import JsonResult
from convdiff.core.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_STREAM_BATCH,
    DEFAULT_TIMEOUT,
    ConvertOptions,
)
from convdiff.core.records import Artifact, Crash, Phase
from convdiff.metrics import PairMetrics

SCHEMA_VERSION = 1
# incomplete: interrupted; error: refused on the user's input after the run folder was made
STATUSES = ("ok", "discrepancy", "crash", "incomplete", "error")


@dataclass(frozen=True)
class RunConfig:
    """One `convdiff run`: what to convert, on which images, and what counts as agreement.

    The image fields are :class:`~convdiff.core.options.ImageOptions`', the preprocessing
    fields :class:`~convdiff.core.options.PreprocessOptions`' (read them as groups with
    :func:`~convdiff.core.options.group_of`)."""

    model: str  # zoo name or path to a model file
    src: str | None = None  # framework of the source; detected from a file when None
    dst: str = "tflite"
    via: tuple[str, ...] = ()  # forced intermediate frameworks
    weights: str = "auto"
    seed: int = 0  # of random weights and of --sample's pick
    data: Path | None = None  # image folder; None = the embedded sample set
    labels: Path | None = None  # labels file for an image folder
    limit: int | None = None  # use at most this many images (the first ones)
    sample: int | None = None  # a stratified random sample of this many, seeded by ``seed``
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    preprocess: str | None = None  # preset name for a user's model file
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    layout: str | None = None  # NCHW | NHWC for a user's model file
    resize: str | None = None  # stretch | center-crop
    max_discrepancy: float = 0.0  # percent of top-1 labels allowed to differ
    out: Path | None = None  # run folder; None = ./convdiff-runs/<model>-<src>-<dst>-<time>
    cache_dir: Path | None = None  # converted-artifact cache; None = ~/.cache/convdiff
    use_cache: bool = True
    timeout: float = DEFAULT_TIMEOUT  # seconds per worker task
    batch_size: int = DEFAULT_BATCH_SIZE
    # images decoded and fed to every model per step: memory is O(stream_batch), and an
    # interrupted run resumes at its first unfinished step (commands.run.streaming)
    stream_batch: int = DEFAULT_STREAM_BATCH
    keep_inputs: bool = False  # keep the preprocessed images, inputs/x-<name>.npy
    keep_outputs: bool = False  # keep every model's whole outputs, outputs/y-<hop>-<fw>.npy
    # "source": the target gets the source's input tensor; "target": the last hop gets its
    # own framework's customary preprocessing (run.flow.target_spec)
    target_preprocess: str = "source"
    # load model files that run code when they load (Keras Lambda, pickles): core.trust
    trust_model_code: bool = False
    localize: bool = False  # localize the last artifact after the run (commands.followup)
    repair: bool = False  # repair the last artifact after the run (localizes it too)


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
    converter: str = ""  # the tool's --converter name
    environment: dict[str, Any] | None = None  # the tool environment it ran in (runtime.envs)


@dataclass
class LocalizationSummary:
    """What `run --localize` found (``report.json: localization``; the whole localization is
    in its own folder, ``out_dir``)."""

    out_dir: str = ""
    status: str = "skipped"  # findings | no_finding | crashed | failed | skipped
    findings: dict[str, int] = field(default_factory=dict)  # per stage, faults only
    top: str = ""  # the top finding, one line
    error: str = ""  # why it failed or was skipped


@dataclass
class RepairSummary:
    """What `run --repair` did (``report.json: repair``)."""

    status: str = (
        "skipped"  # repaired | improved | unchanged | nothing_to_repair | skipped | failed
    )
    output: str = ""  # the repaired model, when one was written
    patch: str = ""
    before: dict[str, Any] = field(default_factory=dict)  # agreement before the repair
    after: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    fallback: dict[str, Any] = field(default_factory=dict)  # a quantized target's float fallback


@dataclass
class RunReport(JsonResult):
    model: str
    src: str
    dst: str
    status: str = "incomplete"  # ok | discrepancy | crash | incomplete | error (STATUSES)
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
    # the inference pass: batch, batches, images, seconds, images_per_second, resumed_at_batch
    stream: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Phase] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""  # status error: the one-line message the user got (exit 2)
    # --localize / --repair: what they found and did (None, written {}, when not asked)
    localization: LocalizationSummary | None = None
    repair: RepairSummary | None = None

    def __bool__(self) -> bool:
        return self.status == "ok"

    @property
    def exit_code(self) -> int:
        """0 agreement within the threshold, 1 discrepancy above it, 2 refused on the user's
        input, 3 crash or incomplete."""
        return {"ok": 0, "discrepancy": 1, "error": 2}.get(self.status, 3)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for key in ("localization", "repair"):  # {} when not asked, as report.json always had
            data[key] = data[key] or {}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        data = {**data}
        for key in ("localization", "repair"):
            data[key] = data.get(key) or None
        return super().from_dict(data)


__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Artifact",
    "Crash",
    "Hop",
    "LocalizationSummary",
    "Phase",
    "RepairSummary",
    "RunConfig",
    "RunReport",
]
