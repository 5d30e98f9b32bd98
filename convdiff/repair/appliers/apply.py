"""Apply a repair patch: write a new model file in the target's own format.

The input is never overwritten, a patch made for another file is refused (sha256), and the
same patch on the same file always gives the same bytes. Preprocessing edits are reported
(``skipped``), never written into the model: they belong in the user's input pipeline.

ONNX and TFLite files are edited here (onnx and the TFLite schema, no framework). Keras and
torch models need their framework: their appliers (:mod:`.keras_apply`, :mod:`.torch_apply`)
run as tasks in a ``tf`` / ``torch`` worker of ``pool`` (a temporary pool when None), the
tensors going there as an .npz file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.core.errors import ConvdiffError
from convdiff.frameworks import framework, layout_of
from convdiff.repair.patch import Edit, Patch, sha256_of
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool

PREPROCESSING_REASON = "preprocessing belongs in your input pipeline; not written into the model"
# formats edited in their framework's worker (runtime.client.APPLIER_TASKS), and the file
# suffixes their appliers write
WORKER_APPLIERS = {"keras": (".keras",), "torch": (".pt2",)}


@dataclass(frozen=True)
class Skipped:
    """An edit the applier did not write, and why."""

    edit: Edit
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"edit": self.edit.to_json(), "reason": self.reason}


@dataclass
class ApplyResult:
    """The patched file and what went into it."""

    out: Path
    applied: list[Edit] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "applied": [e.to_json() for e in self.applied],
            "skipped": [s.to_json() for s in self.skipped],
        }


def apply_patch(
    patch: Path | str | tuple[Patch, dict[str, np.ndarray]],
    target: Path,
    out: Path,
    pool: WorkerPool | None = None,
    verify: bool = False,
) -> ApplyResult:
    """Apply a patch (its .json path, or a loaded ``(Patch, tensors)``) to ``target``, after
    checking that ``target`` is the very file the patch was planned for. ``verify``: then load
    the written model in its runtime (a worker), and refuse (removing it) one that does not
    load: what `convdiff patch apply` does for a patch the user brings."""
    loaded, tensors = Patch.load(patch) if isinstance(patch, (str, Path)) else patch
    target, out = Path(target), Path(out)
    check_output(loaded.target["format"], target, out)
    expected, actual = loaded.target["sha256"], sha256_of(target)
    if expected != actual:
        raise ConvdiffError(
            f"the patch was written for {loaded.target.get('name')} (sha256 {expected[:12]}...), "
            f"not {target} (sha256 {actual[:12]}...)",
            "apply it to the file it was planned for, or plan a new patch for this file",
        )
    fmt = loaded.target["format"]
    result = apply_edits(fmt, target, loaded.edits, tensors, out, pool)
    if verify:
        with _pool(pool) as workers:
            _check_loads(fmt, out, workers)
    return result


def _check_loads(fmt: str, out: Path, pool: WorkerPool) -> None:
    """The written model must load and run in its own runtime (one image of zeros, when its
    input shape is known: onnxruntime loads a Conv whose weight no longer fits its input and
    fails only when it runs); one that does not is removed (it is convdiff's file) and the
    patch is refused as not fitting the model."""
    outcome = client.probe(pool, fmt, out)
    if outcome:
        shape = list(outcome.value.get("input_shape") or [])
        if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
            nchw = layout_of(shape, framework(fmt).layout) == "NCHW"
            h, w, c = (shape[2], shape[3], shape[1]) if nchw else (shape[1], shape[2], shape[3])
            with tempfile.TemporaryDirectory(prefix="convdiff-check-") as tmp:
                np.savez(Path(tmp) / "x.npz", x=np.zeros((1, h, w, c), np.float32))
                outcome = client.infer(pool, fmt, out, Path(tmp) / "x.npz", Path(tmp) / "y.npz")
    if not outcome:
        out.unlink(missing_ok=True)
        raise ConvdiffError(
            f"the patched model {out.name} does not run in its runtime ({outcome.message})",
            "the patch does not fit this model: plan a new one with convdiff repair",
        )


def apply_edits(
    fmt: str,
    target: Path,
    edits: list[Edit],
    tensors: dict[str, np.ndarray],
    out: Path,
    pool: WorkerPool | None = None,
) -> ApplyResult:
    """Write ``target`` with ``edits`` applied to ``out`` (no sha check: the verify loop applies
    growing subsets of a patch's edits)."""
    target, out = Path(target), Path(out)
    _check_paths(target, out)
    model_edits = [e for e in edits if e.action != "preprocessing"]
    skipped = [Skipped(e, PREPROCESSING_REASON) for e in edits if e.action == "preprocessing"]
    out.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last: Keras saves only to *.keras
    partial = out.with_name(f".{out.stem}.{os.getpid()}.partial{out.suffix}")
    if fmt in WORKER_APPLIERS:
        _check_suffix(fmt, target, out)
        applied, refused = _apply_in_worker(fmt, target, model_edits, tensors, partial, pool)
    else:
        data, applied, refused = _applier(fmt).apply(target, model_edits, tensors)
        partial.write_bytes(data)
    partial.replace(out)  # a crash never leaves half a model under the output's name
    skipped += [Skipped(e, reason) for e, reason in refused]
    order = {id(e): i for i, e in enumerate(edits)}
    skipped.sort(key=lambda s: order.get(id(s.edit), 0))
    return ApplyResult(out, applied, skipped)


def read_tensor(
    fmt: str, path: Path, layer: str, field: str, pool: WorkerPool | None = None
) -> np.ndarray | None:
    """A layer's weight or bias as stored in the file, in float32 (int8 dequantized with its
    scales, float16 upcast, through a DequantizeLinear / DEQUANTIZE producer; a Keras or torch
    tensor exactly as the framework holds it); None when the layer has no such tensor. The
    planner reads the file's layout from it."""
    if fmt not in WORKER_APPLIERS:
        return _applier(fmt).read_tensor(Path(path), layer, field)
    with _pool(pool) as workers, tempfile.TemporaryDirectory(prefix="convdiff-tensor-") as tmp:
        npz = Path(tmp) / "tensor.npz"
        outcome = client.read_tensor(workers, fmt, path, layer, field, npz)
        if not outcome:
            raise ConvdiffError(
                f"cannot read {layer}.{field} of {Path(path).name}: {outcome.message}",
                f"check that {Path(path).name} loads in its framework",
            )
        if not outcome.value:
            return None
        with np.load(npz) as data:
            return data["x"]


def _apply_in_worker(
    fmt: str,
    target: Path,
    edits: list[Edit],
    tensors: dict[str, np.ndarray],
    partial: Path,
    pool: WorkerPool | None,
) -> tuple[list[Edit], list[tuple[Edit, str]]]:
    """Run the format's applier task; the worker writes ``partial``."""
    wanted = {e.value for e in edits if e.action == "set_tensor"}
    with _pool(pool) as workers, tempfile.TemporaryDirectory(prefix="convdiff-apply-") as tmp:
        npz = Path(tmp) / "tensors.npz"
        np.savez(npz, **{k: np.asarray(v) for k, v in tensors.items() if k in wanted})
        edits_json = json.loads(json.dumps([e.to_json() for e in edits]))
        outcome = client.apply_edits(workers, fmt, target, edits_json, npz, partial)
    if not outcome:
        partial.unlink(missing_ok=True)
        raise ConvdiffError(
            f"the {fmt} applier failed on {target.name}: {outcome.error_type}: {outcome.message}",
            f"check that {target.name} loads in its framework (worker log: {outcome.log_path})",
        )
    applied = [edits[i] for i in outcome.value["applied"]]
    refused = [(edits[i], str(reason)) for i, reason in outcome.value["refused"]]
    return applied, refused


@contextlib.contextmanager
def _pool(pool: WorkerPool | None) -> Iterator[WorkerPool]:
    """``pool``, or a pool for this call (`convdiff patch apply` has no other)."""
    if pool is not None:
        yield pool
        return
    with (
        tempfile.TemporaryDirectory(prefix="convdiff-workers-") as logs,
        WorkerPool(Path(logs)) as workers,
    ):
        yield workers


def check_output(fmt: str, target: Path, out: Path, *inputs: Path) -> None:
    """Refuse, before any work, an output this applier cannot write: an input (the target or
    any of ``inputs``), another suffix than the target's, or a Keras/torch file of a kind it
    does not edit."""
    _check_paths(target, out, *inputs)
    if fmt in WORKER_APPLIERS:
        _check_suffix(fmt, target, out)
    if out.suffix != target.suffix:
        raise ConvdiffError(
            f"the output {out.name} does not have the target's suffix {target.suffix}",
            f"name the repaired model *{target.suffix}: it is written in the target's format",
        )


def _check_suffix(fmt: str, target: Path, out: Path) -> None:
    suffixes = WORKER_APPLIERS[fmt]
    for path, what in ((target, "target"), (out, "output")):
        if path.suffix not in suffixes:
            raise ConvdiffError(
                f"the {fmt} applier writes {' or '.join(suffixes)} files; the {what} is "
                f"{path.name}",
                "save the Keras model as .keras"
                if fmt == "keras"
                else "export the model with torch.export (.pt2)",
            )


def _applier(fmt: str) -> Any:
    if fmt == "onnx":
        from convdiff.repair.appliers import onnx as onnx_apply

        return onnx_apply
    if fmt == "tflite":
        from convdiff.repair.appliers import tflite as tflite_apply

        return tflite_apply
    raise ConvdiffError(
        f"no patch applier for format {fmt!r}", "patch an .onnx, .tflite, .keras or .pt2 file"
    )


def _check_paths(target: Path, out: Path, *inputs: Path) -> None:
    """The target exists; the output is a file path that is none of the inputs (links
    resolved), so no input is ever overwritten."""
    if not target.is_file():
        raise ConvdiffError(
            f"target model {target} does not exist", "give the converted model file"
        )
    if out.is_dir():
        raise ConvdiffError(
            f"the output {out} is a folder",
            f"give a file path for the patched model, e.g. {out / ('patched' + target.suffix)}",
        )
    for given in (target, *inputs):
        same = out.resolve() == given.resolve() or (out.exists() and os.path.samefile(out, given))
        if same:
            raise ConvdiffError(
                f"refusing to overwrite the input model {given}",
                "give another output path for the patched model",
            )
