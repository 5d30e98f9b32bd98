"""`convdiff localize`'s config and report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from convdiff.core.jsonio import JsonResult
from convdiff.core.options import DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.stages import StageContext
from convdiff.stages.findings import STAGES, Finding

SCHEMA_VERSION = 1
GRAPH_STAGES = ("weights", "hyperparams", "graph")  # what the canonical graphs alone decide


@dataclass(frozen=True)
class RunFiles:
    """The tensors the model runs of a localization leave in ``<out>/runs``, named once, for
    the runs that write them and the repair that reads them: images (NHWC) and whole-model
    outputs as .npy files that tasks read and write a batch at a time (any number of images);
    TVM's few-image outputs and activations as .npz."""

    folder: Path

    @property
    def x_source(self) -> Path:
        """The source's preprocessed images: every model of the localization is fed these."""
        return self.folder / "x-source.npy"

    @property
    def x_target(self) -> Path:
        """The images in the target framework's own preprocessing (the inputs stage)."""
        return self.folder / "x-target.npy"

    def outputs(self, side: str) -> Path:
        """``source``, ``target`` (on the source's tensors) or ``target-own`` outputs."""
        return self.folder / f"y-{side}.npy"

    def tvm_outputs(self, side: str) -> Path:
        """A model's outputs on TVM (``source``, ``target``, ``target-route``)."""
        return self.folder / f"y-{side}-tvm.npz"

    def activations(self, side: str) -> Path:
        """The aligned layers' tensors of ``source`` or ``target`` on the disagreeing images."""
        return self.folder / f"act-{side}.npz"

    def tvm_runs(self) -> int:
        """How many TVM runs (one compile each) the localization made: whole models, and the
        target's segments fed the source's tensors (the function check)."""
        return len(list(self.folder.glob("y-*-tvm.npz"))) + len(
            list(self.folder.glob("function-target.npz"))
        )


@dataclass(frozen=True)
class LocalizeConfig:
    """One `convdiff localize`: the two model files, the stages, where to write."""

    source: str
    target: str
    src: str | None = None  # framework of the source file (detected when None)
    dst: str | None = None
    stages: tuple[str, ...] = STAGES  # all five: the embedded sample images are always there
    out: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    # inputs and tools stages: the images and the source's preprocessing (as `convdiff run`)
    data: Path | None = None
    labels: Path | None = None
    limit: int | None = None
    sample: int | None = None  # a stratified random sample of this many images, by ``seed``
    seed: int = 0
    preprocess: str | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    layout: str | None = None
    resize: str | None = None
    target_preprocess: str | None = None  # preset the target's framework customarily uses
    run_report: Path | None = None  # a `convdiff run` report.json: which hop lost agreement
    source_spec: PreprocessSpec | None = None  # the source's whole spec (run --localize)
    batch_size: int = DEFAULT_BATCH_SIZE
    # load model files that run code when they load (Keras Lambda, pickles): core.trust
    trust_model_code: bool = False


@dataclass
class LocalizeReport(JsonResult):
    source: str
    target: str
    src: str
    dst: str
    stages: list[str]
    schema_version: int = SCHEMA_VERSION
    convdiff_version: str = ""
    created: str = ""
    out_dir: str = ""
    findings: list[Finding] = field(default_factory=list)
    suspects: list[dict[str, Any]] = field(default_factory=list)  # graph stage's ranking
    alignment: dict[str, Any] = field(default_factory=dict)  # pairs/unmatched counts
    imports: dict[str, Any] = field(default_factory=dict)  # per side: route, refusal, notes
    runs: dict[str, Any] = field(default_factory=dict)  # inputs/tools stages: what was run
    crashes: list[dict[str, str]] = field(default_factory=list)  # a stage that stopped
    notes: list[str] = field(default_factory=list)
    # bad input found after the work began (TVM cannot import a model): exit 2, and the
    # stages that could still run are reported
    error: str = ""
    partial: bool = False  # interrupted (or stopped by a bug): the stages that ran are kept
    # the graphs, alignment and names the stages read (the repair planner reads them too);
    # in memory only, never in report.json
    context: StageContext | None = field(default=None, repr=False, compare=False)

    @property
    def faults(self) -> list[Finding]:
        return [f for f in self.findings if f.is_fault]

    @property
    def exit_code(self) -> int:
        """0 nothing found, 1 findings, 3 a stage crashed, 2 bad input (``error``; bad input
        found before any work raises :class:`ConvdiffError` instead)."""
        if self.error:
            return 2
        if self.crashes:
            return 3
        return 1 if self.faults else 0

    @property
    def run_files(self) -> RunFiles:
        """The tensors of the model runs (the repair reads them)."""
        return RunFiles(Path(self.out_dir) / "runs")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, context=None))  # asdict would copy every tensor
        data.pop("context")
        data["findings"] = [f.to_dict() for f in self.findings]
        return data


__all__ = ["GRAPH_STAGES", "SCHEMA_VERSION", "LocalizeConfig", "LocalizeReport", "RunFiles"]
