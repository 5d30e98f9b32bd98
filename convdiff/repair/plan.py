"""The planner: turn localization findings into the edits of a repair patch.

Each fault the stages found becomes edits in the target file's own terms (:mod:`.patch`):

- weights: ``set_tensor`` with the source's parameter, brought back from the canonical layout
  (conv OIHW, dense ``[out, in]``, BatchNorm folded) into the file's own. The file's layout is
  not guessed from its format: the planner reads the tensor as stored (:func:`read_tensor`) and
  finds the axis permutation -- and, where the file keeps a BatchNorm apart, the per-channel
  scale and shift -- that map it onto the target's canonical tensor; the inverse of that map
  carries the source's canonical tensor into the file.
- hyperparams: ``set_attr`` with the source's value (pads, strides, epsilon, clip bounds, ...).
- graph: an extra single-input layer is removed; a missing or moved layer is not something a
  patch can add yet: it stays a note.
- inputs: ``preprocessing`` edits, for the user's input pipeline (reported, never applied).
- tools (a runtime's own fault) and activation evidence name no edit of the file.

Pure numpy and file reading (onnx, the TFLite schema): runs in the orchestrator; a Keras or
torch target's tensors are read in a worker of ``pool``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.ir.graph import Layer
from convdiff.repair.appliers.apply import read_tensor
from convdiff.repair.patch import Edit, Patch, tensor_summary
from convdiff.runtime.pool import WorkerPool
from convdiff.stages import StageContext
from convdiff.stages.findings import Finding, jsonable

FIT_TOL = 1e-4  # relative residual under which a file tensor "is" the canonical one
ATTRS = {  # hyperparameter finding attr -> patch field
    "pads": "pads",
    "strides": "strides",
    "dilation": "dilation",
    "groups": "groups",
    "kernel": "kernel",
    "ceil_mode": "ceil_mode",
    "count_include_pad": "count_include_pad",
    "epsilon": "epsilon",
    "axis": "axis",
}
RESIZE_ATTRS = {  # a resize finding's attribute -> patch field (size and scale: not written)
    "method": "resize_method",
    "coordinate_mode": "coordinate_mode",
    "rounding": "rounding",
    "cubic_alpha": "cubic_alpha",
    "cubic_exclude": "cubic_exclude",
}
FOLDED_AFTER = ("add", "sub", "mul", "div", "batch_norm")  # folded ops that follow the head
INSERTABLE = ("relu", "relu6", "clip", "sigmoid", "tanh", "softmax")  # single-input, no weights
PREPROCESSING_FIELDS = (
    "size", "resize", "crop_fraction", "mean", "std", "channels", "layout", "interpolation",
)  # fmt: skip


@dataclass(frozen=True)
class FileMap:
    """How a file weight maps onto the canonical one: ``canonical = file.transpose(perm) *
    scale`` (``scale`` per output channel, canonical axis 0: a BatchNorm the file keeps apart)."""

    perm: tuple[int, ...]
    scale: np.ndarray

    def to_file(self, canonical: np.ndarray) -> np.ndarray:
        """The file tensor whose canonical image is ``canonical`` (the inverse map)."""
        value = canonical.astype(np.float64)
        shape = (-1,) + (1,) * (value.ndim - 1)
        value = value / self.scale.reshape(shape) if len(self.scale) == len(value) else value
        return np.ascontiguousarray(value.transpose(np.argsort(self.perm))).astype(np.float32)


def plan(
    ctx: StageContext,
    findings: list[Finding],
    source: Path,
    target: Path,
    fmt: str,
    pool: WorkerPool | None = None,
) -> Patch:
    """A patch of ``target`` (format ``fmt``) that undoes ``findings``; see the module doc.
    ``pool`` reads a Keras or torch target's tensors (:func:`read_tensor`)."""
    planner = _Planner(ctx, target, fmt, pool)
    for finding in findings:
        if finding.is_fault:
            planner.add(finding)
    return Patch.for_files(target, fmt, source, planner.edits, planner.tensors, planner.notes)


class _Planner:
    def __init__(
        self, ctx: StageContext, target: Path, fmt: str, pool: WorkerPool | None = None
    ) -> None:
        self.ctx, self.target, self.fmt, self.pool = ctx, target, fmt, pool
        self.edits: list[Edit] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.by_name = {name: lid for lid, name in ctx.names_b.items()}
        self.source_of = {p.b: p.a for p in ctx.alignment.pairs}
        self.target_of = {p.a: p.b for p in ctx.alignment.pairs}
        self.by_source_name = {name: lid for lid, name in ctx.names_a.items()}
        self.maps: dict[str, FileMap] = {}  # target layer id -> its weight's file map
        self.done: set[tuple[str, str]] = set()
        self.stored: dict[tuple[str, str], np.ndarray | None] = {}  # (layer, param) as stored

    def add(self, finding: Finding) -> None:
        handler = getattr(self, f"_{finding.stage}", None)
        if handler is not None:  # tools: a runtime's or converter's doing, no file edit
            handler(finding)

    # -- stages ------------------------------------------------------------------------------

    def _weights(self, f: Finding) -> None:
        param = str(f.evidence.get("param", "weight"))
        layer_id = self._layer_id(f.target_layer)
        if layer_id is None or (layer_id, param) in self.done:
            return
        self.done.add((layer_id, param))
        source_id = self.source_of.get(layer_id)
        if source_id is None:
            self._cannot(f, "its layer has no aligned source layer")
            return
        if param == "bias":  # the bias map needs the weight's scale: plan the weight first
            self._weight_map(layer_id, f.target_layer or layer_id)
        edit = self._tensor_edit(f, layer_id, source_id, param)
        if edit is not None:
            self.edits.append(edit)

    def _hyperparams(self, f: Finding) -> None:
        layer = f.target_layer
        if layer is None:
            return
        if f.kind == "clip_bounds":
            src, dst = (
                f.evidence.get("source", [None, None]),
                f.evidence.get("target", [None, None]),
            )
            for field, new, old in (("clip_min", src[0], dst[0]), ("clip_max", src[1], dst[1])):
                if new != old:
                    self._attr(f, layer, field, new, old)
            return
        if f.kind == "resize":
            self._resize(f, layer)
            return
        if f.kind == "activation":
            self._attr(
                f, layer, "activation", f.evidence.get("source_op"), f.evidence.get("target_op")
            )
            return
        field = ATTRS.get(str(f.evidence.get("attr")))
        if field is None:
            self._cannot(f, f"no patch field sets {f.evidence.get('attr')!r}")
            return
        self._attr(f, layer, field, f.evidence.get("source"), f.evidence.get("target"))

    def _resize(self, f: Finding, layer: str) -> None:
        """One edit per differing sampling setting; a setting the source does not have (a
        nearest-only rounding when the source is linear) needs none."""
        src, dst = f.evidence.get("source", {}), f.evidence.get("target", {})
        for attr in f.evidence.get("attrs", []):
            field = RESIZE_ATTRS.get(attr)
            if field is None:
                self._cannot(f, f"a resize's output {attr} is set by its inputs, not written yet")
            elif src.get(attr) is not None:
                self._attr(f, layer, field, src[attr], dst.get(attr))

    def _graph(self, f: Finding) -> None:
        if f.kind == "extra_layer" and f.target_layer not in self.by_name:
            # a canonical id: the op is part of another node of the file (a Keras layer's own
            # bias add, say), which no edit of that node alone removes
            self._cannot(f, "the file has no node of its own for it")
            return
        if f.kind == "extra_layer":
            self.edits.append(
                Edit(
                    "remove_node",
                    f.target_layer,
                    "",
                    None,
                    f.evidence.get("op"),
                    "graph",
                    f.kind,
                    f.summary,
                )
            )
            return
        if f.kind == "missing_layer":
            self._insert(f)
        elif f.kind == "reordered":
            self._move(f)

    def _insert(self, f: Finding) -> None:
        """A single-input activation the target lacks goes in after the target layer aligned
        with the one it follows in the source."""
        op = str(f.evidence.get("op"))
        if op not in INSERTABLE:
            self._cannot(f, f"inserting a {op} is not written (activations only)")
            return
        layer = self._source_layer(f.source_layer)
        after = self._aligned_end(layer.inputs[0]) if layer and len(layer.inputs) == 1 else None
        if layer is None or after is None:
            self._cannot(f, "the layer before it has no aligned target layer the file names")
            return
        name, folded = after
        value = {"name": f.source_layer, "attrs": jsonable(layer.attrs), "folded": folded}
        self.edits.append(Edit("insert_node", name, op, value, None, f.stage, f.kind, f.summary))

    def _move(self, f: Finding) -> None:
        """A single-input layer standing elsewhere in the target moves after the target layer
        aligned with the one it follows in the source."""
        layer = self._source_layer(f.source_layer)
        moved_id = self._layer_id(f.target_layer)
        after = self._aligned_end(layer.inputs[0]) if layer and len(layer.inputs) == 1 else None
        if layer is None or moved_id is None or after is None:
            self._cannot(f, "the layer it follows in the source has no aligned target layer")
            return
        moved = self.ctx.b[moved_id]
        if moved.tensor not in ("", moved_id) or len(moved.inputs) != 1:
            self._cannot(f, "the target layer is more than one single-input node of the file")
            return
        before = self._end(moved.inputs[0])
        value = {"after": after[0], "folded": after[1]}
        self.edits.append(
            Edit("move_node", f.target_layer or moved_id, "after", value,
                 before[0] if before else moved.inputs[0], f.stage, f.kind, f.summary)
        )  # fmt: skip

    def _source_layer(self, name: str | None) -> Layer | None:
        lid = self.by_source_name.get(name or "", name)
        return self.ctx.a[lid] if lid is not None and lid in self.ctx.a else None

    def _aligned_end(self, source_id: str) -> tuple[str, list[str]] | None:
        """Where the target's counterpart of source layer ``source_id`` ends in the file."""
        target_id = self.target_of.get(source_id)
        return None if target_id is None else self._end(target_id)

    def _end(self, target_id: str) -> tuple[str, list[str]] | None:
        """The file's node whose output is target layer ``target_id``'s output, and the ops
        canonicalization folded into it after that node (a bias Add, a BatchNorm: separate
        nodes in some files, part of the node in others; the applier steps over those it
        finds); None when the file names no such node."""
        if target_id not in self.ctx.b:
            return None
        layer = self.ctx.b[target_id]
        tensor = layer.tensor or target_id
        if tensor in self.ctx.names_b:
            return self.ctx.names_b[tensor], []
        name = self.ctx.names_b.get(target_id)
        if name is None:
            return None
        folded = [item.split()[0] for item in layer.folded]
        return name, [op for op in folded if op in FOLDED_AFTER]

    def _inputs(self, f: Finding) -> None:
        source = f.evidence.get("source_spec") or {}
        target = f.evidence.get("target_spec") or {}
        for key in PREPROCESSING_FIELDS:
            if key in source and source.get(key) != target.get(key):
                self.edits.append(
                    Edit(
                        "preprocessing", "input", key, source[key], target.get(key),
                        "inputs", f.kind, f.suggestion or f.summary,
                    )
                )  # fmt: skip

    # -- tensors -------------------------------------------------------------------------------

    def _tensor_edit(self, f: Finding, layer_id: str, source_id: str, param: str) -> Edit | None:
        name = f.target_layer or layer_id
        wanted = self.ctx.a[source_id].params.get(param)
        current = self.ctx.b[layer_id].params.get(param)
        stored = self._read(name, param)
        if wanted is None:  # the source has none: the target's must contribute nothing
            wanted = np.zeros_like(current) if current is not None else None
        if wanted is None:
            self._cannot(f, f"neither model has a {param}")
            return None
        if param == "weight":
            mapping = self._weight_map(layer_id, name)
            if mapping is None:
                self._cannot(f, "the file's weight does not map onto the canonical one")
                return None
            value = mapping.to_file(wanted)
        else:
            value = self._bias_to_file(layer_id, wanted, current, stored)
        key = f"{name}/{param}"
        self.tensors[key] = value
        old = tensor_summary(stored, value)
        return Edit("set_tensor", name, param, key, old, "weights", f.kind, f.summary)

    def _weight_map(self, layer_id: str, name: str) -> FileMap | None:
        if layer_id not in self.maps:
            stored = self._read(name, "weight")
            canonical = self.ctx.b[layer_id].params.get("weight")
            if stored is None or canonical is None:
                return None
            found = fit(stored, canonical)
            if found is None:
                return None
            self.maps[layer_id] = found
        return self.maps[layer_id]

    def _read(self, name: str, param: str) -> np.ndarray | None:
        """The tensor as the file stores it, read once (a Keras/torch read loads the model)."""
        key = (name, param)
        if key not in self.stored:
            self.stored[key] = read_tensor(self.fmt, self.target, name, param, self.pool)
        return self.stored[key]

    def _bias_to_file(
        self,
        layer_id: str,
        wanted: np.ndarray,
        current: np.ndarray | None,
        stored: np.ndarray | None,
    ) -> np.ndarray:
        """``canonical bias = file bias * scale + shift`` per channel (a BatchNorm kept apart in
        the file gives scale and shift); invert it for the source's bias."""
        mapping = self.maps.get(layer_id)
        scale = mapping.scale if mapping is not None else np.ones(len(wanted))
        if current is None or len(current) != len(wanted) or len(scale) != len(wanted):
            return wanted.astype(np.float32)  # a shape change (extra class): no BatchNorm here
        file_bias = stored if stored is not None and stored.shape == current.shape else 0.0
        shift = current.astype(np.float64) - scale * file_bias
        return ((wanted.astype(np.float64) - shift) / scale).astype(np.float32)

    # -- small helpers ---------------------------------------------------------------------------

    def _attr(self, f: Finding, layer: str, field: str, new: Any, old: Any) -> None:
        self.edits.append(Edit("set_attr", layer, field, new, old, f.stage, f.kind, f.summary))

    def _layer_id(self, name: str | None) -> str | None:
        if name is None:
            return None
        lid = self.by_name.get(name, name)
        return lid if lid in self.ctx.b else None

    def _cannot(self, f: Finding, why: str) -> None:
        where = f.target_layer or f.source_layer or ""
        self.notes.append(f"not patched: {f.stage} {f.kind} at {where}: {why}")


def fit(stored: np.ndarray, canonical: np.ndarray) -> FileMap | None:
    """The permutation (and per-output-channel scale) mapping a file tensor onto its canonical
    form, or None when none fits within :data:`FIT_TOL`. Exact permutations win; a scale is
    only fitted when no permutation alone fits (a BatchNorm the file keeps apart)."""
    stored = stored.astype(np.float64)
    canonical = canonical.astype(np.float64)
    peak = max(float(np.abs(canonical).max()), 1e-12)
    candidates = [
        p
        for p in itertools.permutations(range(stored.ndim))
        if stored.transpose(p).shape == canonical.shape
    ]
    best: tuple[float, FileMap] | None = None
    for perm in candidates:
        moved = stored.transpose(perm)
        plain = float(np.abs(moved - canonical).max()) / peak
        if plain <= FIT_TOL:
            return FileMap(tuple(perm), np.ones(canonical.shape[0]))
        flat_m = moved.reshape(len(moved), -1)
        flat_c = canonical.reshape(len(canonical), -1)
        norm = (flat_m**2).sum(axis=1)
        scale = np.where(norm > 0, (flat_m * flat_c).sum(axis=1) / np.where(norm > 0, norm, 1), 1.0)
        residual = float(np.abs(flat_m * scale[:, None] - flat_c).max()) / peak
        if residual <= FIT_TOL and (best is None or residual < best[0]):
            best = (residual, FileMap(tuple(perm), scale))
    return None if best is None else best[1]


__all__ = ["FileMap", "fit", "plan"]
