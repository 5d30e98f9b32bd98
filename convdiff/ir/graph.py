"""The canonical layer graph: a framework-neutral description of one model, for comparison.

Every imported model, whatever its framework or converter, becomes a :class:`CanonicalGraph`
of :class:`Layer` objects in *logical* NCHW terms:

- ``op`` comes from the small fixed vocabulary :data:`OPS`, so layers of two graphs compare by
  kind; anything else is ``other`` with the TVM op name in ``attrs["tvm_op"]``.
- ``attrs`` are normalized: ``pads`` are ``[top, left, bottom, right]``, axes are logical
  (NCHW) axes, clip bounds are floats; no layout strings remain.
- ``params`` hold weights in ONE layout: conv ``OIHW``, dense ``[out, in]``, per-channel
  vectors ``[C]``; constant operands of elementwise ops in the logical layout of the tensor.
- ``shape`` is the logical output shape (NCHW for 4-D tensors; -1 for a dynamic dimension).
- ``inputs`` are the ids of the producing layers (edges).
- ``folded`` lists what canonicalization absorbed into the layer (e.g. ``batch_norm bn``),
  the evidence the stages need after BatchNorm or bias or padding disappear as layers.
- ``tensor`` is the id of the *raw* layer whose output equals this layer's output (the layer
  itself in a raw graph; the folded BatchNorm/bias/scale after canonicalization; empty when no
  raw tensor does): what activation evidence runs TVM to read.

Tensors never go into the JSON: :meth:`CanonicalGraph.save` writes ``graph.json`` and an .npz
beside it, keyed ``<layer id>/<param name>``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

OPS = (
    "input",
    "conv2d",
    "dense",
    "pool_max",
    "pool_avg",
    "pool_global_avg",
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "concat",
    "relu",
    "relu6",
    "clip",
    "sigmoid",
    "tanh",
    "softmax",
    "pad",
    "batch_norm",
    "mean",
    "reshape",
    "flatten",
    "transpose",
    "resize",
    "identity",
    "other",
)

# ops that only move or relabel data: canonicalization drops them when they change no meaning
NOISE_OPS = ("identity", "reshape")


@dataclass
class Layer:
    """One operation of a model, in logical (NCHW) terms; see the module docstring."""

    id: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    shape: list[int] = field(default_factory=list)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""  # what the layer was in the imported module, e.g. "relax.nn.conv2d lv3"
    folded: list[str] = field(default_factory=list)
    tensor: str | None = None  # raw layer whose output this is (None: the layer's own id)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"layer {self.id}: op {self.op!r} is not in the vocabulary")
        if self.tensor is None:
            self.tensor = self.id

    def to_dict(self) -> dict[str, Any]:
        """JSON form: params appear as their shapes only (the arrays go to the .npz)."""
        data = asdict(self)
        data["params"] = {k: list(v.shape) for k, v in self.params.items()}
        return data


@dataclass
class CanonicalGraph:
    """Layers in topological order, with the graph's inputs, outputs and provenance."""

    layers: list[Layer]
    inputs: list[str]
    outputs: list[str]
    meta: dict[str, Any] = field(default_factory=dict)  # framework, route, tvm version, notes

    def __post_init__(self) -> None:
        self._by_id = {layer.id: layer for layer in self.layers}
        if len(self._by_id) != len(self.layers):
            raise ValueError("duplicate layer ids")

    def __getitem__(self, layer_id: str) -> Layer:
        return self._by_id[layer_id]

    def __contains__(self, layer_id: object) -> bool:
        return layer_id in self._by_id

    def __len__(self) -> int:
        return len(self.layers)

    def reindex(self) -> None:
        """Call after editing ``layers`` in place."""
        self._by_id = {layer.id: layer for layer in self.layers}

    def consumers(self, layer_id: str) -> list[Layer]:
        return [layer for layer in self.layers if layer_id in layer.inputs]

    def ops(self) -> list[str]:
        """The op kinds in order, inputs excluded: a compact picture for tests and reports."""
        return [layer.op for layer in self.layers if layer.op != "input"]

    # -- serialization --------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "meta": self.meta,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], params: dict[str, np.ndarray] | None = None
    ) -> CanonicalGraph:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported graph schema {data.get('schema_version')!r}")
        params = params or {}
        layers = []
        for item in data["layers"]:
            names = item.get("params", {})
            layers.append(
                Layer(
                    id=item["id"],
                    op=item["op"],
                    inputs=list(item["inputs"]),
                    attrs=dict(item["attrs"]),
                    shape=list(item["shape"]),
                    params={n: params[f"{item['id']}/{n}"] for n in names},
                    source=item.get("source", ""),
                    folded=list(item.get("folded", [])),
                    tensor=item.get("tensor", item["id"]),  # graphs saved before the field
                )
            )
        return cls(layers, list(data["inputs"]), list(data["outputs"]), dict(data["meta"]))

    def save(self, json_path: Path, npz_path: Path | None = None) -> tuple[Path, Path]:
        """Write ``graph.json`` and its params (.npz beside it unless given)."""
        json_path = Path(json_path)
        npz_path = Path(npz_path) if npz_path else json_path.with_suffix(".npz")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        arrays = {f"{lay.id}/{k}": v for lay in self.layers for k, v in lay.params.items()}
        np.savez(npz_path, **arrays)
        return json_path, npz_path

    @classmethod
    def load(cls, json_path: Path, npz_path: Path | None = None) -> CanonicalGraph:
        json_path = Path(json_path)
        npz_path = Path(npz_path) if npz_path else json_path.with_suffix(".npz")
        with np.load(npz_path) as data:
            params = {k: data[k] for k in data.files}
        return cls.from_json(json.loads(json_path.read_text()), params)
