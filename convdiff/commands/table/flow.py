"""`convdiff table`: the label-discrepancy table of models x source frameworks x targets.

Every cell is one :func:`convdiff.commands.run.flow.run` in its own run folder,
``<out>/cells/<model>/<src>-<dst>``, so a cell is as inspectable as any run and the table is
resumable: a cell whose report is final
(complete, or a crash, which is a finished result) and whose options are unchanged is reused
when the same command runs again; an interrupted cell is redone from scratch. Cells run on
threads under :mod:`convdiff.commands.table.schedule`'s memory budget, or (``executor="ray"``)
as tasks on a Ray cluster (:mod:`convdiff.runtime.ray_jobs`); each run() has its own workers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import shutil
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import convdiff
from convdiff.commands.followup import top_finding
from convdiff.commands.run.flow import run
from convdiff.commands.run.types import RunReport
from convdiff.commands.table.render import cell_summary, write_outputs
from convdiff.commands.table.schedule import (
    Interrupted,
    Job,
    default_budget_gb,
    estimate_gb,
    run_jobs,
)
from convdiff.commands.table.types import (
    EXECUTORS,
    Cell,
    CellCrash,
    ModelBlock,
    TableConfig,
    TableReport,
)
from convdiff.converters import converter_names, find_chain
from convdiff.core.cache import file_digest, key_of
from convdiff.core.errors import ConvdiffError
from convdiff.core.jsonio import write_atomic
from convdiff.core.options import TARGET_PREPROCESS, TFLITE_OPTS, ImageOptions, group_of
from convdiff.core.outdir import keep_own_dir, prepare_out_dir
from convdiff.core.progress import Progress
from convdiff.frameworks import framework
from convdiff.inputs import data as datasets
from convdiff.inputs.source import resolve_source
from convdiff.runtime import ray_jobs
from convdiff.runtime.pool import WorkerPool
from convdiff.stages.ranking import FAILED

CELL_FILE = "cell.json"  # the table's note in a cell folder: options fingerprint, seconds
FINISHED = ("ok", "discrepancy", "crash")  # statuses of a cell whose result is final


def plan(config: TableConfig) -> list[ModelBlock]:
    """The table's blocks, or a one-line error before anything runs."""
    if not config.models:
        raise ConvdiffError("no models given", "pass --models with zoo names or model files")
    if config.executor not in EXECUTORS:
        raise ConvdiffError(
            f"unknown --executor {config.executor!r}", f"use {' or '.join(EXECUTORS)}"
        )
    if config.address is not None and config.executor != "ray":
        raise ConvdiffError("--address names a Ray cluster", "add --executor ray")
    if not config.frameworks:
        raise ConvdiffError("no frameworks given", "pass --frameworks, e.g. torch,keras,tf,tflite")
    for name in config.frameworks:
        framework(name)
    if config.preprocess not in TARGET_PREPROCESS:
        raise ConvdiffError(
            f"unknown --preprocess {config.preprocess!r}", f"use {' or '.join(TARGET_PREPROCESS)}"
        )
    if config.tflite_opt not in TFLITE_OPTS:
        raise ConvdiffError(f"unknown --tflite-opt {config.tflite_opt!r}", f"use {TFLITE_OPTS}")
    targets = tuple(dict.fromkeys(config.frameworks))
    known = converter_names()
    unknown = [name for name in config.converters if name not in known]
    if unknown:
        raise ConvdiffError(
            f"unknown converter {unknown[0]!r} in --converters", f"use any of: {', '.join(known)}"
        )
    groups = ("", *dict.fromkeys(config.converters))
    blocks: list[ModelBlock] = []
    for model in config.models:
        from convdiff.zoo import is_zoo_name, zoo_model

        if is_zoo_name(model):
            offered = zoo_model(model).frameworks
            sources = tuple(f for f in targets if f in offered)
            if not sources:
                raise ConvdiffError(
                    f"the zoo offers {model} in {', '.join(offered)}, none of which is in "
                    f"--frameworks {','.join(targets)}",
                    f"add one of {', '.join(offered)} to --frameworks",
                )
            blocks.append(ModelBlock(model, model, "zoo", sources, targets, groups))
        else:
            source = resolve_source(model, None)
            blocks.append(
                ModelBlock(source.name, model, "file", (source.framework,), targets, groups)
            )
    names = [b.name for b in blocks]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConvdiffError(
            f"two models would share the table block {twice[0]!r}",
            "give each model once, and model files distinct names",
        )
    images = group_of(ImageOptions, config)
    images.check()
    if config.data is not None:  # a bad image folder is one error, not one per cell
        datasets.load_images(**asdict(images))
    return blocks


def table(config: TableConfig, stream: TextIO | None = None, quiet: bool = False) -> TableReport:
    """Run (or reuse) every cell and write table.json/.csv/.md/.html into the table folder.

    Progress: one line per finished cell on ``stream`` (stderr by default). Raises
    KeyboardInterrupt after writing the partial table when interrupted.
    """
    started = time.perf_counter()
    if config.executor == "ray":
        config = shared_paths(config)
    blocks = plan(config)
    if config.executor == "ray":  # before the table folder exists: a usage error leaves none
        ray_jobs.import_ray()
        if config.address:
            ray_jobs.check_address(config.address)
    out = prepare_out_dir(config.out, "table")
    budget = config.max_memory_gb if config.max_memory_gb is not None else default_budget_gb()
    report = TableReport(
        frameworks=list(dict.fromkeys(config.frameworks)),
        blocks=blocks,
        convdiff_version=convdiff.__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        out_dir=str(out),
        options=_options(config),
        jobs=config.jobs,
        memory_budget_gb=budget,
        executor=config.executor,
    )
    given = {block.name: block.model for block in blocks}  # name -> the model as given
    cells = {c.key: c for c in _cells(config, blocks)}
    log = _ProgressLog(len(cells), config.jobs, stream or sys.stderr, quiet)
    stop = threading.Event()
    work: list[Job[Cell]] = []
    for cell in cells.values():
        reusable = _reusable(config, given[cell.model], out, cell)
        if reusable is not None:
            cells[cell.key] = reusable
            log.finished(reusable)
        else:
            work.append(Job(cell, f"{cell.model}/{cell.src}", cell.estimate_gb))

    def save() -> None:
        report.cells = list(cells.values())
        report.reused = [c.key for c in report.cells if c.reused]
        report.seconds = round(time.perf_counter() - started, 3)
        write_outputs(report, out)

    def done(job: Job[Cell], cell: Cell) -> None:
        cells[cell.key] = cell
        log.finished(cell)
        save()

    def interrupt() -> None:
        stop.set()
        WorkerPool.kill_all()

    try:
        if config.executor == "ray":
            ray_jobs.run_jobs_on_ray(
                work,
                functools.partial(ray_cell, config, given, out),
                on_lost=lost_cell,
                address=config.address,
                on_done=done,
                on_interrupt=interrupt,
                name=lambda cell: f"convdiff-cell {cell.key}",
            )
        else:
            run_jobs(
                work,
                lambda cell: _run_cell(config, given[cell.model], out, cell, stop),
                jobs=config.jobs,
                budget_gb=budget,
                on_done=done,
                on_interrupt=interrupt,
            )
    except Interrupted:
        report.notes.append("interrupted: unfinished cells are redone by the same command")
        save()
        raise KeyboardInterrupt from None
    report.status = "complete"
    save()
    return report


def shared_paths(config: TableConfig) -> TableConfig:
    """The config with every path absolute, as the Ray executor ships it: a task runs on some
    node in some working directory, so a relative path would name another place there. The
    paths must also be ones every node sees (a shared filesystem), which only the user knows."""

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else Path(path).expanduser().resolve()

    def model(name: str) -> str:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name  # a zoo name stays a name

    return replace(
        config,
        models=tuple(model(m) for m in config.models),
        out=absolute(config.out),
        cache_dir=absolute(config.cache_dir),
        data=absolute(config.data),
        labels=absolute(config.labels),
    )


def ray_cell(config: TableConfig, given: dict[str, str], out: Path, cell: Cell) -> Cell:
    """One cell as a Ray task runs it on a node: :func:`_run_cell`, and on ``ray.cancel``
    (KeyboardInterrupt in the task) the cell's own workers die with it, as on a local Ctrl-C,
    and its report is marked unfinished."""
    stop = threading.Event()
    try:
        return _run_cell(config, given[cell.model], out, cell, stop)
    except KeyboardInterrupt:
        stop.set()
        WorkerPool.kill_all()
        _stopped(cell, out / cell.run_dir, stop)
        raise


def lost_cell(cell: Cell, reason: str) -> Cell:
    """A cell whose Ray worker died without a result: a crash of the run itself, so the table
    completes and says why; its folder holds no final report, so the next table redoes it."""
    return _with(cell, status="crash", crash=CellCrash("run", "ray", "", reason, "died"))


def _options(config: TableConfig) -> dict[str, Any]:
    keep = (
        "preprocess",
        "weights",
        "seed",
        "data",
        "labels",
        "limit",
        "sample",
        "tflite_opt",
        "converters",
    )
    values = asdict(config)
    return {k: str(values[k]) if isinstance(values[k], Path) else values[k] for k in keep}


def _cells(config: TableConfig, blocks: list[ModelBlock]) -> list[Cell]:
    """Every cell in table order: model blocks, column groups, source rows, target columns, no
    diagonal. A tool's group holds the cells whose route can go through that tool."""
    cells = []
    for block in blocks:
        for group in block.converters:
            for src in block.sources:
                for dst in block.targets:
                    if src == dst:
                        continue
                    try:
                        chain = find_chain(src, dst, (), config.convert_options(group))
                    except ConvdiffError:
                        if not group:
                            raise
                        continue  # the tool converts neither from src nor to dst
                    tools = [edge.tool for edge in chain]
                    folder = f"{src}-{dst}" + (f"-{group}" if group else "")
                    cells.append(
                        Cell(
                            block.name,
                            src,
                            dst,
                            route=(src, *(edge.dst for edge in chain)),
                            estimate_gb=estimate_gb(block.name, tools, block.kind == "file"),
                            run_dir=f"cells/{block.name.replace(':', '-')}/{folder}",
                            converter=group,
                        )
                    )
    return cells


def _fingerprint(config: TableConfig, model: str, cell: Cell, out: Path) -> str:
    """What decides a cell's result: its run options and, for a file, the file's bytes."""
    options = asdict(
        config.run_config(model, cell.src, cell.dst, out / cell.run_dir, cell.converter)
    )
    for volatile in ("out", "cache_dir", "use_cache", "timeout"):
        options.pop(volatile)
    digest = file_digest(Path(model)) if Path(model).exists() else ""
    return key_of(options, digest)


def _reusable(config: TableConfig, model: str, out: Path, cell: Cell) -> Cell | None:
    """The cell as an earlier invocation finished it, if its folder holds a final result."""
    folder = out / cell.run_dir
    try:
        note = json.loads((folder / CELL_FILE).read_text())
        report = RunReport.from_json((folder / "report.json").read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if note.get("fingerprint") != _fingerprint(config, model, cell, out):
        return None
    if report.status not in FINISHED or (report.partial and report.status != "crash"):
        return None
    # seconds is None when the table was killed between the report's last write and the note's
    cell = _from_report(cell, report, note.get("seconds"), reused=True)
    if not config.wants_finding(cell):
        return cell
    if note.get("top_finding") and not note["top_finding"].startswith(FAILED):
        return _with(cell, top_finding=note["top_finding"])
    finding = top_finding(report, folder / "localize")
    write_atomic(folder / CELL_FILE, json.dumps({**note, "top_finding": finding}))
    return _with(cell, top_finding=finding)


def _run_cell(
    config: TableConfig, model: str, out: Path, cell: Cell, stop: threading.Event
) -> Cell:
    """Run one cell from scratch in its folder; never raises for a cell's own failure."""
    folder = out / cell.run_dir
    # what an interrupted attempt left stays: its run resumes the inference pass where it
    # stopped (commands.run.streaming); the run replaces everything else it finds there
    keep_own_dir(folder)
    shutil.rmtree(folder / "localize", ignore_errors=True)  # an old localization is not kept
    fingerprint = _fingerprint(config, model, cell, out)
    write_atomic(folder / CELL_FILE, json.dumps({"fingerprint": fingerprint, "seconds": None}))
    run_config = config.run_config(model, cell.src, cell.dst, folder, cell.converter)
    started = time.perf_counter()
    try:
        report = run(run_config, Progress(enabled=False))
    except ConvdiffError as exc:
        return _stopped(cell, folder, stop) or _with(cell, status="error", error=str(exc))
    except Exception as exc:  # a convdiff bug: keep the other cells going, say what it was
        error = f"internal error: {type(exc).__name__}: {exc}"
        return _stopped(cell, folder, stop) or _with(cell, status="error", error=error)
    seconds = round(time.perf_counter() - started, 3)
    if not _untouched_by_stop(report):
        stopped = _stopped(cell, folder, stop)
        if stopped is not None:
            return stopped
    note: dict[str, Any] = {"fingerprint": fingerprint, "seconds": seconds}
    cell = _from_report(cell, report, seconds, reused=False)
    if config.wants_finding(cell):
        cell = _with(cell, top_finding=top_finding(report, folder / "localize"))
        if not stop.is_set():  # a localization cut by Ctrl-C is redone, not remembered
            note["top_finding"] = cell.top_finding
    write_atomic(folder / CELL_FILE, json.dumps(note))
    return cell


def _untouched_by_stop(report: RunReport) -> bool:
    """A result that Ctrl-C's killing of the workers cannot have made: complete, or a crash of
    the tool itself (killed workers show as ``died``)."""
    if report.status == "crash":
        return all(crash.failure != "died" for crash in report.crashes)
    return report.status in FINISHED and not report.partial


def _stopped(cell: Cell, folder: Path, stop: threading.Event) -> Cell | None:
    """After Ctrl-C the cell's workers were killed: its report must not pass for a result."""
    if not stop.is_set():
        return None
    path = folder / "report.json"
    with contextlib.suppress(OSError, ValueError):
        report = RunReport.from_json(path.read_text())
        report.status, report.partial = "incomplete", True
        report.notes.append("interrupted: convdiff table was stopped while this cell ran")
        report.write(path)
    return _with(cell, status="incomplete")


def _with(cell: Cell, **changes: Any) -> Cell:
    return replace(cell, **changes)


def _from_report(cell: Cell, report: RunReport, seconds: float | None, reused: bool) -> Cell:
    crash = None
    if report.crashes:
        first = report.crashes[0]
        reason = next((line.strip() for line in first.message.splitlines() if line.strip()), "")
        crash = CellCrash(
            first.stage, first.tool, first.version, reason[:300], first.failure, first.hop
        )
    numbers = report.status in ("ok", "discrepancy")  # a crash's numbers are an earlier hop's
    return _with(
        cell,
        status=report.status,
        route=tuple(report.route),
        images=report.images or int(report.data.get("images", 0)),
        top1_discrepancy=report.top1_discrepancy if numbers else None,
        top5_discrepancy=report.top5_discrepancy if numbers else None,
        max_abs_diff=report.max_abs_diff if numbers else None,
        crash=crash,
        reused=reused,
        seconds=seconds,
    )


@dataclass
class _ProgressLog:
    """One line per finished cell: ``[3/12] mobilenetv2 keras -> tflite: ok, top-1 0.0% ...``."""

    total: int
    jobs: int
    stream: TextIO
    quiet: bool = False
    done: int = 0
    times: list[float] = field(default_factory=list)

    def finished(self, cell: Cell) -> None:
        self.done += 1
        if not cell.reused and cell.seconds is not None:
            self.times.append(cell.seconds)
        if self.quiet:
            return
        took = "reused" if cell.reused else f"{cell.seconds or 0:.1f} s"
        left = self.total - self.done
        eta = ""
        if left and self.times:
            rest = statistics.median(self.times) * left / max(1, min(self.jobs, left))
            eta = f", ~{_duration(rest)} left"
        self.stream.write(
            f"[{self.done}/{self.total}] {cell.model} {cell.src} -> {cell.dst}: "
            f"{cell_summary(cell)} ({took}{eta})\n"
        )
        self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["lost_cell", "plan", "ray_cell", "shared_paths", "table"]
