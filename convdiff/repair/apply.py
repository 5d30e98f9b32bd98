"""Apply a repair patch: write a new model file in the target's own format.

The input is never overwritten, a patch made for another file is refused (sha256), and the
same patch on the same file always gives the same bytes. Preprocessing edits are reported
(``skipped``), never written into the model: they belong in the user's input pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.errors import ConvdiffError
from convdiff.repair.patch import Edit, Patch, sha256_of

PREPROCESSING_REASON = "preprocessing belongs in your input pipeline; not written into the model"


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
    patch: Path | str | tuple[Patch, dict[str, np.ndarray]], target: Path, out: Path
) -> ApplyResult:
    """Apply a patch (its .json path, or a loaded ``(Patch, tensors)``) to ``target``, after
    checking that ``target`` is the very file the patch was planned for."""
    loaded, tensors = Patch.load(patch) if isinstance(patch, (str, Path)) else patch
    target, out = Path(target), Path(out)
    _check_paths(target, out)
    expected, actual = loaded.target["sha256"], sha256_of(target)
    if expected != actual:
        raise ConvdiffError(
            f"the patch was written for {loaded.target.get('name')} (sha256 {expected[:12]}...), "
            f"not {target} (sha256 {actual[:12]}...)",
            "apply it to the file it was planned for, or plan a new patch for this file",
        )
    return apply_edits(loaded.target["format"], target, loaded.edits, tensors, out)


def apply_edits(
    fmt: str, target: Path, edits: list[Edit], tensors: dict[str, np.ndarray], out: Path
) -> ApplyResult:
    """Write ``target`` with ``edits`` applied to ``out`` (no sha check: the verify loop applies
    growing subsets of a patch's edits)."""
    target, out = Path(target), Path(out)
    _check_paths(target, out)
    model_edits = [e for e in edits if e.action != "preprocessing"]
    skipped = [Skipped(e, PREPROCESSING_REASON) for e in edits if e.action == "preprocessing"]
    data, applied, refused = _applier(fmt).apply(target, model_edits, tensors)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(out)  # a crash never leaves half a model under the output's name
    skipped += [Skipped(e, reason) for e, reason in refused]
    order = {id(e): i for i, e in enumerate(edits)}
    skipped.sort(key=lambda s: order.get(id(s.edit), 0))
    return ApplyResult(out, applied, skipped)


def read_tensor(fmt: str, path: Path, layer: str, field: str) -> np.ndarray | None:
    """A layer's weight or bias as stored in the file, in float32 (int8 dequantized with its
    scales, float16 upcast, through a DequantizeLinear / DEQUANTIZE producer); None when the
    layer has no such tensor. The planner reads the file's layout from it."""
    return _applier(fmt).read_tensor(Path(path), layer, field)


def _applier(fmt: str) -> Any:
    if fmt == "onnx":
        from convdiff.repair import onnx_apply

        return onnx_apply
    if fmt == "tflite":
        from convdiff.repair import tflite_apply

        return tflite_apply
    raise ConvdiffError(f"no patch applier for format {fmt!r}", "patch an .onnx or .tflite file")


def _check_paths(target: Path, out: Path) -> None:
    if not target.is_file():
        raise ConvdiffError(
            f"target model {target} does not exist", "give the converted model file"
        )
    same = out.resolve() == target.resolve() or (out.exists() and os.path.samefile(out, target))
    if same:
        raise ConvdiffError(
            f"refusing to overwrite the input model {target}",
            "give another output path for the patched model",
        )
