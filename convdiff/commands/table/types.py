"""`convdiff table`'s config and report: cells, model blocks, the table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convdiff.commands.run.types import RunConfig
from convdiff.core.jsonio import JsonResult
from convdiff.core.options import DEFAULT_TIMEOUT, ConvertOptions, ImageOptions, group_of

SCHEMA_VERSION = 1
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class TableConfig:
    """One `convdiff table`: which models and frameworks, and the options every cell shares."""

    models: tuple[str, ...]  # zoo names or model files
    frameworks: tuple[str, ...]  # the target columns (and the source rows a zoo model offers)
    out: Path | None = None  # table folder; None = ./convdiff-runs/table-<time>
    jobs: int = 1  # cells running at once
    max_memory_gb: float | None = None  # budget of the running cells' estimates; None = 75%
    preprocess: str = "source"  # source | target (RunConfig.target_preprocess)
    weights: str = "auto"
    seed: int = 0
    data: Path | None = None
    labels: Path | None = None
    limit: int | None = None
    sample: int | None = None
    tflite_opt: str = "none"
    # converter tools that get a column group of their own (--converters): each target column
    # is run again with the tool named, where the tool is on the route
    converters: tuple[str, ...] = ()
    cache_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    localize: bool = False  # name the top finding of each discrepancy cell (stages.ranking)
    localize_above: float | None = None  # ... and of each cell whose max |diff| exceeds this
    trust_model_code: bool = False  # load model files that run code when they load (core.trust)
    executor: str = "local"  # local: threads under jobs/max_memory_gb; ray: tasks on a cluster
    address: str | None = None  # --executor ray: the cluster; None = a local one

    def wants_finding(self, cell: Cell) -> bool:
        """Localize this finished cell? A discrepancy, or a max |diff| above the bound."""
        if not self.localize:
            return False
        if cell.status == "discrepancy":
            return True
        bound, diff = self.localize_above, cell.max_abs_diff
        return bound is not None and diff is not None and diff > bound

    def convert_options(self, converter: str = "") -> ConvertOptions:
        """The cells' converter options; ``converter`` names the column group's tool."""
        return ConvertOptions(
            tflite_opt=self.tflite_opt, converters=(converter,) if converter else ()
        )

    def run_config(
        self, model: str, src: str, dst: str, out: Path, converter: str = ""
    ) -> RunConfig:
        return RunConfig(
            model=model,
            src=src,
            dst=dst,
            weights=self.weights,
            **asdict(group_of(ImageOptions, self)),
            convert=self.convert_options(converter),
            out=out,
            cache_dir=self.cache_dir,
            timeout=self.timeout,
            target_preprocess=self.preprocess,
            trust_model_code=self.trust_model_code,
        )


@dataclass(frozen=True)
class CellCrash:
    """Why a cell has no numbers: the first crash of its run, in one line."""

    stage: str  # build | convert | load | infer
    tool: str
    version: str
    reason: str  # the first line of the tool's message
    failure: str = "exception"
    hop: int | None = None


@dataclass(frozen=True)
class Cell:
    """One (model, source, target) of the table: the run's headline numbers or its crash."""

    model: str
    src: str
    dst: str
    status: str = "incomplete"  # ok | discrepancy | crash | error | incomplete
    route: tuple[str, ...] = ()
    images: int = 0
    top1_discrepancy: float | None = None  # percent
    top5_discrepancy: float | None = None  # percent
    max_abs_diff: float | None = None
    crash: CellCrash | None = None
    error: str = ""  # a user error or convdiff bug that stopped the run (status error)
    reused: bool = False  # taken from an earlier invocation's finished run folder
    seconds: float | None = None  # the run's wall time (the original run's when reused)
    estimate_gb: float = 0.0  # the scheduler's peak-memory estimate
    run_dir: str = ""  # the cell's run folder, relative to the table folder
    top_finding: str = ""  # --localize: the top finding, "localize: no finding" or its failure
    converter: str = ""  # the column group's tool ("": the default tools)

    @property
    def key(self) -> str:
        group = f"@{self.converter}" if self.converter else ""
        return f"{self.model}/{self.src}-{self.dst}{group}"

    @property
    def column(self) -> str:
        """The target column's label: ``tflite``, or ``tflite (onnx2tf)`` in a tool's group."""
        return column_label(self.dst, self.converter)


@dataclass(frozen=True)
class ModelBlock:
    """One model's block of the table: source rows x target columns."""

    name: str  # zoo name, or the model file's stem
    model: str  # as given on the command line
    kind: str  # zoo | file
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    converters: tuple[str, ...] = ("",)  # column groups: "" the default tools, then --converters


@dataclass
class TableReport(JsonResult):
    frameworks: list[str]
    blocks: list[ModelBlock] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    status: str = "incomplete"  # complete | incomplete
    schema_version: int = SCHEMA_VERSION
    convdiff_version: str = ""
    created: str = ""
    out_dir: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the shared run options
    jobs: int = 1
    memory_budget_gb: float = 0.0
    executor: str = "local"  # local | ray (then jobs and memory_budget_gb do not apply)
    reused: list[str] = field(default_factory=list)  # keys of the cells reused this time
    seconds: float = 0.0  # wall time of this invocation
    notes: list[str] = field(default_factory=list)

    def cell(self, model: str, src: str, dst: str, converter: str = "") -> Cell | None:
        wanted = (model, src, dst, converter)
        return next((c for c in self.cells if (c.model, c.src, c.dst, c.converter) == wanted), None)

    def columns(self, block: ModelBlock) -> list[tuple[str, str]]:
        """A block's target columns as (dst, converter): the default group, then each tool's
        columns that hold a cell (a tool serves only some targets)."""
        return [
            (dst, group)
            for group in block.converters
            for dst in block.targets
            if not group
            or any((c.model, c.dst, c.converter) == (block.name, dst, group) for c in self.cells)
        ]

    def __bool__(self) -> bool:
        return self.exit_code == 0

    @property
    def exit_code(self) -> int:
        """As for a run: 3 if a cell crashed, failed or is unfinished, 1 if one disagrees."""
        statuses = {c.status for c in self.cells}
        if self.status != "complete" or statuses - {"ok", "discrepancy"}:
            return 3
        return 1 if "discrepancy" in statuses else 0

    def to_json(self) -> str:
        return super().to_json() + "\n"  # table.json has always ended with a newline


def column_label(dst: str, converter: str) -> str:
    return f"{dst} ({converter})" if converter else dst


__all__ = [
    "EXECUTORS",
    "SCHEMA_VERSION",
    "column_label",
    "Cell",
    "CellCrash",
    "ModelBlock",
    "TableConfig",
    "TableReport",
]
