"""The run's inference pass: each batch of images through every model of the chain, compared as
it goes, resumable at the first unfinished batch.

Why one pass over all models, not one pass per model: an image is decoded once for the whole
chain, each hop is compared on the batch while both outputs are in memory, and what stays is a
record of a few bytes per image and hop (:data:`convdiff.metrics.ROW_DTYPE`), never the outputs
or inputs of a whole data set. Memory is O(batch), the run folder O(images x ~100 bytes).

Files in ``<run>/outputs``: ``<hop>-<framework>.npy`` per hop (the per-image records, filled
batch by batch in place) and ``stream.json`` (what is done). ``stream.json`` is written after a
batch's records are on disk, so a run killed at any moment restarts at the first batch it does
not list as done; its ``key`` names everything the records depend on (models, images,
preprocessing, batch size), so a changed run never resumes on another's records.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import convdiff
from convdiff.commands.run.pipeline import Workspace, infer
from convdiff.core.jsonio import write_atomic
from convdiff.core.outdir import own_dir
from convdiff.core.records import Artifact, Crash
from convdiff.inputs.data import ImageRecord
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.inputs.stream import Batch, ImageStream, batch_count
from convdiff.metrics import ROW_DTYPE, PairMetrics, pair_rows, summarize

STATE_FILE = "stream.json"
# Disagreeing images a report lists per hop: beyond this, a 50,000-image run that disagrees
# on most labels would write megabytes of JSON; every image is in the hop's records anyway.
MAX_LISTED = 1000


@dataclass(frozen=True)
class Fed:
    """One model of the pass: the source (hop 0) or a hop's artifact, and what it is fed."""

    hop: int
    artifact: Artifact
    feed: str = "source"  # the preprocessing whose tensors it takes
    layout: str = "auto"


@dataclass
class StreamResult:
    """What the pass found: the models completed with their input shapes, each hop's agreement
    or crash, the source's crash, and how the pass went (``report.json: stream``)."""

    artifacts: dict[int, Artifact] = field(default_factory=dict)
    agreements: dict[int, PairMetrics] = field(default_factory=dict)
    crashes: dict[int, Crash] = field(default_factory=dict)  # by hop; 0 is the source
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    key: str
    batch_size: int
    images: int
    batches_done: int = 0
    notes: dict[str, str] = field(default_factory=dict)  # hop -> class note
    crashes: dict[str, dict[str, Any]] = field(default_factory=dict)  # hop -> Crash fields
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # hop -> Artifact fields

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1))

    def artifact_records(self) -> dict[int, Artifact]:
        """Each model as its runtime last described it (input shape, layout), by hop."""
        return {
            int(hop): Artifact(**{**fields, "input_shape": tuple(fields["input_shape"])})
            for hop, fields in self.artifacts.items()
        }

    def crash_records(self) -> dict[int, Crash]:
        return {int(hop): Crash(**fields) for hop, fields in self.crashes.items()}

    @classmethod
    def read(cls, path: Path) -> _State | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def rows_file(folder: Path, fed: Fed) -> Path:
    """Where a hop's per-image records are kept."""
    return folder / f"{fed.hop}-{fed.artifact.framework}.npy"


def stream_chain(
    ws: Workspace,
    models: list[Fed],
    records: list[ImageRecord],
    specs: dict[str, PreprocessSpec],
    *,
    key: str,
    batch_size: int,
    infer_batch: int,
    keep_inputs: bool = False,
    keep_outputs: bool = False,
    threads: int = 2,
) -> StreamResult:
    """Feed ``records`` in batches of ``batch_size`` to ``models`` (the source first), compare
    every hop to the source per batch, and summarize. Resumes a pass of the same ``key`` left
    in ``<run>/outputs``. ``infer_batch``: images per call into a framework. ``keep_inputs``
    and ``keep_outputs`` also keep the preprocessed images (``inputs/x-<name>.npy``) and every
    model's whole outputs (``outputs/y-<hop>-<framework>.npy``)."""
    folder, n = ws.out / "outputs", len(records)
    state = _resume_state(folder, key, batch_size, n)
    total = batch_count(n, batch_size)
    hops = [m for m in models if m.hop > 0]
    result = StreamResult(info={"batch": batch_size, "batches": total, "images": n})
    if state.batches_done:
        result.info["resumed_at_batch"] = state.batches_done + 1
    rows = {m.hop: _open_rows(rows_file(folder, m), n) for m in hops}
    kept = _kept_inputs(ws.out / "inputs", specs, records) if keep_inputs else {}
    logits: dict[int, np.ndarray] | None = {} if keep_outputs else None
    alive = [m for m in models if not _stopped(state.crash_records(), m.hop)]
    started, done_before = time.perf_counter(), state.batches_done
    stream = ImageStream(
        records, specs, ws.out / "scratch" / "stream", batch_size, state.batches_done, threads
    )
    with stream:
        for batch in stream:
            if not alive or alive[0].hop != 0:
                break  # the source crashed: nothing left to compare
            alive = _feed(ws, batch, alive, state, rows, logits, infer_batch, n)
            for name, array in kept.items():
                with np.load(batch.files[name]) as data:
                    array[batch.start : batch.stop] = data["x"]
            for array in (*rows.values(), *kept.values(), *(logits or {}).values()):
                array.flush()
            state.batches_done = batch.index + 1
            state.write(folder / STATE_FILE)
            batch.remove()
            fed_now = batch.stop - done_before * batch_size
            _report_progress(ws, batch.stop, n, fed_now, started)
    elapsed = time.perf_counter() - started
    fed_now = max(0, min(state.batches_done * batch_size, n) - done_before * batch_size)
    result.artifacts, result.crashes = state.artifact_records(), state.crash_records()
    result.info["seconds"] = round(elapsed, 3)
    result.info["images_per_second"] = round(fed_now / elapsed, 1) if elapsed > 0 else None
    if 0 in result.crashes or state.batches_done < total:
        return result
    names = [r.name for r in records]
    accepted = [r.accepted for r in records]
    for fed in hops:
        if _stopped(result.crashes, fed.hop):
            continue
        agreement = summarize(rows[fed.hop], names, accepted, state.notes.get(str(fed.hop), ""))
        if len(agreement.disagreeing) > MAX_LISTED:  # all of them are in the hop's records
            agreement = replace(agreement, disagreeing=agreement.disagreeing[:MAX_LISTED])
            result.info.setdefault("listed", {})[str(fed.hop)] = MAX_LISTED
        result.agreements[fed.hop] = agreement
    return result


def _feed(
    ws: Workspace,
    batch: Batch,
    alive: list[Fed],
    state: _State,
    rows: dict[int, np.ndarray],
    logits: dict[int, np.ndarray] | None,
    infer_batch: int,
    images: int,
) -> list[Fed]:
    """One batch through the source and every hop still running, each hop's records written
    in place (and, given ``logits``, each model's outputs); returns the models still running
    (a crash ends the chain at its hop)."""
    source_y: np.ndarray | None = None
    for fed in alive:
        y_file = ws.out / "scratch" / "stream" / f"y-{fed.hop}.npz"
        y, artifact, crash = infer(
            ws, fed.artifact, batch.files[fed.feed], y_file, fed.hop, infer_batch, fed.layout
        )
        if crash is None and y is not None:
            state.artifacts[str(fed.hop)] = asdict(artifact)
            if logits is not None:
                if fed.hop not in logits:
                    logits[fed.hop] = _open_outputs(ws.out / "outputs", fed, images, y)
                logits[fed.hop][batch.start : batch.stop] = y.reshape(len(y), -1)
            if fed.hop == 0:
                source_y = y
                continue
            try:
                pair, note = pair_rows(source_y, y)
            except ValueError as exc:  # another task's outputs (10 classes against 1000)
                crash = _compare_crash(fed, str(exc))
            else:
                rows[fed.hop][batch.start : batch.stop] = pair
                state.notes[str(fed.hop)] = note
                continue
        assert crash is not None
        state.crashes[str(fed.hop)] = asdict(crash)
        return [m for m in alive if m.hop < fed.hop]  # the chain stops here
    return alive


def _compare_crash(fed: Fed, message: str) -> Crash:
    """Outputs that cannot be compared with the source's: recorded as the hop's failure."""
    return Crash(
        stage="compare",
        tool="convdiff",
        version=convdiff.__version__,
        message=f"its {fed.artifact.framework} outputs do not match the source's: {message}",
        failure="exception",
        hop=fed.hop,
    )


def _stopped(crashes: dict[int, Crash], hop: int) -> bool:
    """A hop that crashed, or comes after one, is not fed any more (the chain stops there)."""
    return any(crashed <= hop for crashed in crashes)


def _resume_state(folder: Path, key: str, batch_size: int, images: int) -> _State:
    """The state of an unfinished pass with this key, or a fresh one in an emptied folder."""
    found = _State.read(folder / STATE_FILE)
    if found is not None and found.key == key and found.batch_size == batch_size:
        return found
    own_dir(folder)
    return _State(key=key, batch_size=batch_size, images=images)


def _open_rows(path: Path, images: int) -> np.ndarray:
    """A hop's records, as a file mapped into memory: made at full size once, then filled in
    place batch by batch (a resumed pass keeps the rows already there)."""
    if path.exists():
        return np.lib.format.open_memmap(path, mode="r+")
    return np.lib.format.open_memmap(path, mode="w+", dtype=ROW_DTYPE, shape=(images,))


def _open_outputs(folder: Path, fed: Fed, images: int, y: np.ndarray) -> np.ndarray:
    """``--keep-outputs``: a model's outputs, ``outputs/y-<hop>-<framework>.npy``, made at
    full size when its first batch tells the width (kept as it is by a resumed pass)."""
    path = folder / f"y-{fed.hop}-{fed.artifact.framework}.npy"
    shape = (images, int(np.prod(y.shape[1:])))
    if path.exists():
        array = np.lib.format.open_memmap(path, mode="r+")
        if array.shape == shape:
            return array
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def _kept_inputs(
    folder: Path, specs: dict[str, PreprocessSpec], records: list[ImageRecord]
) -> dict[str, np.ndarray]:
    """``--keep-inputs``: the preprocessed tensors, ``inputs/x-<name>.npy``, filled per batch."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = {}
    for name, spec in specs.items():
        path = folder / f"x-{name}.npy"
        shape = (len(records), *spec.size, 3)
        if path.exists():
            array = np.lib.format.open_memmap(path, mode="r+")
            if array.shape == shape:
                kept[name] = array
                continue
        kept[name] = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    return kept


def _report_progress(ws: Workspace, done: int, total: int, fed: int, started: float) -> None:
    """``1,216/50,000 images, 212 img/s, ETA 3 min 50 s`` on the running step; the rate is
    this pass's (a resumed pass does not count the batches it found done)."""
    elapsed = time.perf_counter() - started
    rate = fed / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate else 0.0
    ws.progress.update(f"{done:,}/{total:,} images, {rate:,.0f} img/s, ETA {_duration(left)}")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


__all__ = ["STATE_FILE", "Fed", "StreamResult", "rows_file", "stream_chain"]
