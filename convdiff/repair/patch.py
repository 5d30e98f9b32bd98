"""The repair patch: a versioned JSON file of edits plus an .npz of the tensors they set.

Edits name layers the way the target file does (an ONNX node's name; a TFLite op's first
output tensor: the names :func:`convdiff.ir.names.file_names` gives), so a patch can be read,
reviewed and applied without convdiff's canonical graph. Tensors are stored already in the
file's own layout and shape (the planner applies the layout transform), never inside the JSON.
Preprocessing edits describe a change to the user's input pipeline: they are reported, never
written into a model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import convdiff
from convdiff.core.errors import ConvdiffError

SCHEMA_VERSION = 1
ACTIONS = ("set_tensor", "set_attr", "remove_node", "insert_node", "move_node", "preprocessing")
FORMATS = ("onnx", "tflite", "keras", "torch")
TENSOR_FIELDS = ("weight", "bias")
ATTR_FIELDS = (
    "pads",  # [top, left, bottom, right]
    "strides",
    "dilation",
    "groups",
    "kernel",
    "epsilon",
    "clip_min",
    "clip_max",
    "ceil_mode",
    "count_include_pad",
    "activation",
    "axis",
    # one resize's sampling (the ``resize`` layer's canonical attributes; see convdiff.ir.tvm.ops)
    "resize_method",  # nearest | linear | cubic
    "coordinate_mode",  # half_pixel | align_corners | asymmetric | ...
    "rounding",  # nearest only: round_prefer_floor | round_prefer_ceil | floor | ceil | round
    "cubic_alpha",
    "cubic_exclude",
)


@dataclass(frozen=True)
class Edit:
    """One change to the target file, named in the file's own terms.

    ``value``: for ``set_tensor`` the key of the tensor in the patch's .npz (already in the
    file's layout and shape); for ``set_attr`` the new value (JSON); for ``preprocessing`` the
    new spec value. ``old`` summarizes the previous value for the diff view (for a tensor:
    :func:`tensor_summary`).

    Nodes: ``remove_node`` drops ``layer`` (its consumers read its input). ``insert_node``
    puts a new single-input layer after ``layer``: ``field`` is its canonical op (``relu``,
    ``relu6``, ``clip``, ``sigmoid``, ``tanh``, ``softmax``) and ``value`` ``{"name": the
    source's name for it, "attrs": its canonical attributes, "folded": ops}``. ``move_node``
    takes ``layer`` out of its place and puts it after ``value["after"]`` (``field`` is
    ``"after"``, ``old`` the layer it followed). ``folded``: the ops the localizer folded into
    the layer it goes after (a bias add, a BatchNorm); the applier steps over those that
    follow that node as nodes of their own."""

    action: str
    layer: str
    field: str = ""
    value: Any = None
    old: Any = None
    stage: str = ""
    kind: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Edit:
        action = data.get("action")
        if action not in ACTIONS:
            raise ConvdiffError(
                f"patch edit has unknown action {action!r} "
                f"(this convdiff knows {', '.join(ACTIONS)})",
                "write the patch again with this convdiff version",
            )
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Patch:
    """A repair of one target file, planned against one source model.

    ``tensors`` holds the arrays that ``set_tensor`` edits name; it is not part of the JSON
    (:meth:`save` writes it beside, as ``<patch>.npz``)."""

    target: dict[str, str]  # name, format (one of FORMATS), sha256
    source: dict[str, str]  # name, sha256
    edits: list[Edit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    convdiff_version: str = convdiff.__version__
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    tensors: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def for_files(
        cls,
        target: Path,
        fmt: str,
        source: Path,
        edits: list[Edit] | None = None,
        tensors: dict[str, np.ndarray] | None = None,
        notes: list[str] | None = None,
    ) -> Patch:
        """A patch whose target and source are identified by name and sha256."""
        return cls(
            target={"name": Path(target).name, "format": fmt, "sha256": sha256_of(target)},
            source={"name": Path(source).name, "sha256": sha256_of(source)},
            edits=list(edits or []),
            notes=list(notes or []),
            tensors=dict(tensors or {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "convdiff_version": self.convdiff_version,
            "created": self.created,
            "target": self.target,
            "source": self.source,
            "edits": [e.to_json() for e in self.edits],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Patch:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConvdiffError(
                f"patch has schema_version {version!r}; this convdiff reads {SCHEMA_VERSION}",
                "write the patch again with this convdiff version",
            )
        target = data.get("target") or {}
        if target.get("format") not in FORMATS or not target.get("sha256"):
            raise ConvdiffError(
                f"patch target {target!r} lacks a format ({' or '.join(FORMATS)}) or a sha256",
                "write the patch again with convdiff",
            )
        return cls(
            target=dict(target),
            source=dict(data.get("source") or {}),
            edits=[Edit.from_json(e) for e in data.get("edits", [])],
            notes=list(data.get("notes", [])),
            schema_version=version,
            convdiff_version=str(data.get("convdiff_version", "")),
            created=str(data.get("created", "")),
        )

    def save(self, path: Path | str) -> Path:
        """Write the JSON (indent 2) to ``path`` and the tensors to ``path.with_suffix('.npz')``."""
        path = Path(path)
        missing = [e.value for e in self.edits if e.action == "set_tensor"]
        missing = [k for k in missing if k not in self.tensors]
        if missing:
            raise ValueError(f"set_tensor edits name tensors the patch does not hold: {missing}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        npz = path.with_suffix(".npz")
        if self.tensors:
            np.savez(npz, **self.tensors)
        elif npz.exists():  # a stale file from an earlier patch of the same name
            npz.unlink()
        return path

    @classmethod
    def load(cls, path: Path | str) -> tuple[Patch, dict[str, np.ndarray]]:
        """Read a patch and its tensors; a malformed patch is a ConvdiffError with the fix."""
        path = Path(path)
        fix = "write the patch again with convdiff"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConvdiffError(
                f"patch file {path} does not exist", "give a patch's .json file"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConvdiffError(f"patch file {path} is not JSON ({exc})", fix) from None
        if not isinstance(data, dict):
            raise ConvdiffError(f"patch file {path} holds no JSON object", fix)
        try:
            patch = cls.from_json(data)
            keys = [e.value for e in patch.edits if e.action == "set_tensor"]
        except (
            TypeError,
            ValueError,
            AttributeError,
            KeyError,
        ) as exc:  # a field of the wrong kind
            raise ConvdiffError(
                f"patch file {path} is malformed ({type(exc).__name__}: {exc})", fix
            ) from None
        npz = path.with_suffix(".npz")
        if keys and not npz.exists():
            raise ConvdiffError(
                f"patch {path.name} sets tensors but its tensor file {npz} is missing",
                f"keep {npz.name} beside {path.name}",
            )
        tensors: dict[str, np.ndarray] = {}
        if npz.exists():
            try:
                with np.load(npz, allow_pickle=False) as data_npz:
                    tensors = {k: data_npz[k] for k in data_npz.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise ConvdiffError(
                    f"patch tensor file {npz} is not a readable .npz ({type(exc).__name__}: "
                    f"{exc or 'empty'})",
                    fix,
                ) from None
        absent = [k for k in keys if k not in tensors]
        if absent:
            raise ConvdiffError(f"patch tensor file {npz} lacks {', '.join(map(str, absent))}", fix)
        patch.tensors = tensors
        return patch, tensors


def sha256_of(path: Path | str) -> str:
    """A file's sha256; for a folder (SavedModel), of its files' relative paths and contents."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode() + b"\0")
            digest.update(hashlib.sha256(f.read_bytes()).digest())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_summary(old: np.ndarray | None, new: np.ndarray | None = None) -> dict[str, Any]:
    """What ``Edit.old`` holds for ``set_tensor``: the previous shape and dtype, and the largest
    absolute change when the shapes agree (``None`` when the file had no such tensor)."""
    if old is None:
        return {"shape": None, "dtype": None}
    summary: dict[str, Any] = {"shape": list(old.shape), "dtype": str(old.dtype)}
    if new is not None and new.shape == old.shape:
        change = np.abs(new.astype(np.float64) - old.astype(np.float64))
        summary["max_abs_change"] = float(change.max()) if change.size else 0.0
    return summary


# -- the human-readable diff -----------------------------------------------------------------


def diff_view(patch: Patch, tensors: dict[str, np.ndarray] | None = None) -> str:
    """One line per edit, e.g. ``conv2.weight: set from source (8x8x3x3 float32, max |change|
    0.031)``, ``pool1.pads: [0,0,1,1] -> [0,0,0,0]``."""
    tensors = patch.tensors if tensors is None else tensors
    return "\n".join(_line(e, tensors) for e in patch.edits)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _dims(shape: Any) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _line(edit: Edit, tensors: dict[str, np.ndarray]) -> str:
    if edit.action == "set_tensor":
        new = tensors.get(edit.value)
        what = f"{_dims(new.shape)} {new.dtype}" if new is not None else f"tensor {edit.value!r}"
        old = edit.old if isinstance(edit.old, dict) else {}
        if old.get("max_abs_change") is not None:
            what += f", max |change| {old['max_abs_change']:.2g}"
        elif old.get("shape") is None and "shape" in old:
            what += ", new: the file had none"
        elif old.get("shape") is not None and new is not None and list(new.shape) != old["shape"]:
            what += f", was {_dims(old['shape'])} {old.get('dtype')}"
        elif old.get("dtype"):
            what += f", was {old['dtype']}"
        return f"{edit.layer}.{edit.field}: set from source ({what})"
    if edit.action == "set_attr":
        return f"{edit.layer}.{edit.field}: {_compact(edit.old)} -> {_compact(edit.value)}"
    if edit.action == "remove_node":
        return f"{edit.layer}: remove node (its consumers take its input)"
    if edit.action == "insert_node":
        value = edit.value if isinstance(edit.value, dict) else {}
        attrs = f" {_compact(value['attrs'])}" if value.get("attrs") else ""
        named = value.get("name")
        return f"{edit.layer}: insert {edit.field}{attrs} after it (the source's {named})"
    if edit.action == "move_node":
        after = edit.value.get("after") if isinstance(edit.value, dict) else edit.value
        return f"{edit.layer}: move after {after} (was after {edit.old})"
    return (
        f"preprocessing {edit.field}: {_compact(edit.old)} -> {_compact(edit.value)} "
        "(apply in your input pipeline; not written into the model)"
    )
