"""Pipeline pieces shared by the commands: build or take a source, convert a hop, probe, infer.

Each piece runs one task in a worker and turns its outcome into data: an artifact, or a
:class:`~convdiff.commands.run.types.Crash` naming the stage, tool and version. A task that raises a
:class:`~convdiff.core.errors.ConvdiffError` inside the worker (e.g. weights not on this machine)
is re-raised here as the user's error it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.converters import ConverterInfo
from convdiff.core.cache import ArtifactCache, copy_artifact, key_of
from convdiff.core.options import ConvertOptions
from convdiff.core.outdir import own_dir
from convdiff.core.progress import Progress
from convdiff.core.records import Artifact, Crash, Phase
from convdiff.frameworks import framework
from convdiff.hints import hint_for
from convdiff.runtime import client
from convdiff.runtime.pool import TaskOutcome, WorkerPool

# Bump when a builder or converter wrapper changes what it writes, to retire cached files.
CACHE_REVISION = 1


@dataclass
class Workspace:
    """What one command shares across its steps: run folder, workers, cache, progress, timings."""

    out: Path
    pool: WorkerPool
    cache: ArtifactCache
    progress: Progress
    timings: dict[str, Phase] = field(default_factory=dict)

    def record(self, phase: str, outcome: TaskOutcome, work_seconds: float) -> None:
        """Add a task's wall time, the framework's own time and its memory to a phase."""
        before = self.timings.get(phase, Phase())
        self.timings[phase] = Phase(
            seconds=before.seconds + outcome.wall_seconds,
            work_seconds=before.work_seconds + work_seconds,
            peak_rss_mb=max(before.peak_rss_mb, outcome.peak_rss_mb),
        )

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Time orchestrator-side work (preparing images, comparing): convdiff's own cost."""
        started = time.perf_counter()
        try:
            yield
        finally:
            before = self.timings.get(phase, Phase())
            elapsed = time.perf_counter() - started
            self.timings[phase] = replace(before, seconds=before.seconds + elapsed)


def crash_from(outcome: TaskOutcome, stage: str, tool: str, version: str, hop: int) -> Crash:
    """Turn a failed task into a recorded crash, or raise it if it is the user's error."""
    outcome.raise_user_error()
    crash = Crash(
        stage=stage,
        tool=tool,
        version=version,
        message=outcome.message or outcome.error_type,
        failure=outcome.failure,
        hop=hop,
        log=outcome.log_path,
    )
    return replace(crash, hint=hint_for(crash) or "")


def build_zoo_source(
    ws: Workspace,
    model: str,
    fw: str,
    weights: str,
    seed: int,
    calibration: Callable[[], Path],
    calibration_key: str,
) -> tuple[Artifact | None, dict[str, Any], str, Crash | None]:
    """Build a zoo model (cached); returns artifact, weights info, cache key, crash.

    ``calibration`` writes the BatchNorm calibration images and returns their path; it is
    called only when the build is not in the cache.
    """
    info = framework(fw)
    key = key_of("build", CACHE_REVISION, model, fw, weights, seed, calibration_key, info.version())
    hit = ws.cache.lookup(key)
    if hit is not None:
        path, meta = hit
        return _place(ws, path, fw, 0, cached=True), meta["weights"], key, None
    scratch = ws.out / "scratch" / "build"
    outcome = client.build(
        ws.pool, model, fw, weights, seed, calibration(), scratch, on_tick=ws.progress.tick
    )
    ws.record("build", outcome, outcome.seconds)
    if not outcome:
        return None, {}, key, crash_from(outcome, "build", f"{model} builder", info.version(), 0)
    built = Path(outcome.value["path"])
    weights_info = {k: str(outcome.value.get(k, "")) for k in ("weights", "weights_detail", "note")}
    cached = ws.cache.store(key, built, {"weights": weights_info, "model": model, "framework": fw})
    return _place(ws, cached, fw, 0, cached=False), weights_info, key, None


def convert_hop(
    ws: Workspace,
    edge: ConverterInfo,
    index: int,
    parent: Artifact,
    parent_key: str,
    options: ConvertOptions,
    calibration: tuple[Path, str] | None = None,
) -> tuple[Artifact | None, str, float | None, Crash | None]:
    """Convert one hop (cached); returns artifact, cache key, converter seconds, crash.

    ``calibration``: the run's images and their key, given to a tool that calibrates (and
    then part of the cache key: other images make another model)."""
    version = edge.tool_version()
    used = options.as_dict(edge.options)
    calibrates = calibration is not None and edge.needs_calibration(options)
    images_key = calibration[1] if calibration is not None and calibrates else None
    key = key_of(
        "convert", CACHE_REVISION, parent_key, edge.src, edge.dst, edge.name, version, used
    )
    if images_key is not None:
        key = key_of(key, images_key)
    hit = ws.cache.lookup(key)
    if hit is not None:
        path, meta = hit
        return _place(ws, path, edge.dst, index, cached=True), key, meta.get("seconds"), None
    scratch = ws.out / "scratch" / f"hop{index}"
    outcome = client.convert(
        ws.pool,
        edge.worker_kind,
        edge.src,
        edge.dst,
        parent.path,
        scratch,
        options.as_dict(),
        input_shape=list(parent.input_shape) or None,
        tool=edge.name,
        calibration=calibration[0] if calibration is not None and calibrates else None,
        on_tick=ws.progress.tick,
    )
    work = outcome.value["convert_seconds"] if outcome else 0.0
    ws.record("convert", outcome, work)
    if not outcome:
        return None, key, None, crash_from(outcome, "convert", edge.tool, version, index)
    cached = ws.cache.store(key, Path(outcome.value["path"]), {"seconds": work, "edge": edge.func})
    return _place(ws, cached, edge.dst, index, cached=False), key, work, None


def probe(
    ws: Workspace, artifact: Artifact, hop: int
) -> tuple[dict[str, Any] | None, Crash | None]:
    """Load a model in its runtime and read its input/output description."""
    info = framework(artifact.framework)
    outcome = client.probe(ws.pool, info.name, artifact.path, on_tick=ws.progress.tick)
    ws.record("load", outcome, outcome.value["load_seconds"] if outcome else 0.0)
    if not outcome:
        return None, crash_from(outcome, "load", info.title, info.version(), hop)
    return outcome.value, None


def infer(
    ws: Workspace,
    artifact: Artifact,
    inputs: Path,
    outputs: Path,
    hop: int,
    batch_size: int,
    layout: str = "auto",
) -> tuple[np.ndarray | None, Artifact, Crash | None]:
    """Run a model on the ``x`` of the ``inputs`` npz (one batch of a stream, or all images);
    its outputs pass through ``outputs``, which is removed once read.

    Returns the outputs, the artifact completed with the input shape and layout the runtime
    reported, and a crash if the model failed to load or run.
    """
    info = framework(artifact.framework)
    outputs.parent.mkdir(parents=True, exist_ok=True)
    outcome = client.infer(
        ws.pool,
        info.name,
        artifact.path,
        inputs,
        outputs,
        layout=layout,
        batch_size=batch_size,
        on_tick=ws.progress.tick,
    )
    if not outcome:
        ws.record("infer", outcome, 0.0)
        return None, artifact, crash_from(outcome, "infer", info.title, info.version(), hop)
    value = outcome.value
    load = value["load_seconds"]
    ws.record(
        "load", TaskOutcome(ok=True, wall_seconds=load, peak_rss_mb=outcome.peak_rss_mb), load
    )
    ws.record(
        "infer",
        TaskOutcome(
            ok=True, wall_seconds=outcome.wall_seconds - load, peak_rss_mb=outcome.peak_rss_mb
        ),
        value["infer_seconds"],
    )
    done = Artifact(
        artifact.framework,
        artifact.path,
        tuple(value.get("input_shape") or ()),
        value["layout"],
        artifact.cached,
    )
    with np.load(outputs) as data:
        y = data["y"]
    outputs.unlink(missing_ok=True)
    return y, done, None


def _place(ws: Workspace, source: Path, fw: str, index: int, *, cached: bool) -> Artifact:
    """Keep every artifact of the chain in the run folder: a copy (a reflink where the
    filesystem shares blocks), so that changing it never changes the cache."""
    folder = own_dir(ws.out / "artifacts" / f"{index}-{fw}")
    target = folder / source.name
    copy_artifact(source, target)
    return Artifact(framework=fw, path=str(target), cached=cached)


__all__ = [
    "Workspace",
    "build_zoo_source",
    "convert_hop",
    "crash_from",
    "infer",
    "probe",
]
