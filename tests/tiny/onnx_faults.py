"""Generic fault injection into ANY ONNX classifier (a real export, not a hand-made model).

:func:`inject` copies a model file with one conversion fault edited in, and returns what
convdiff must then report: an :class:`Expected` ``(stage, kind_options, node_name)``, the node
named as the ONNX file names it (findings name layers as the file does). Unlike
:mod:`tests.tiny.faults`, which edits named nodes of one tiny model, each fault here searches
the graph for a suitable node.

Why each injector checks the outputs: real architectures hide branches (timm zero-inits the
last norm of residual blocks, ConvNeXt scales its branches by 1e-6, a Softmax over a dimension
of size one is constant), so an edit can leave the outputs where they were, and a fault that
moves nothing cannot be localized from any evidence. A candidate node is kept only when the
model stays valid (``onnx.checker``, onnxruntime runs it) and the outputs on the given images
move by more than :data:`MIN_DIFF`; otherwise the next candidate is tried, from the middle of
the network outwards (never the first or last weighted layer, nor a node reading the graph
input or writing its output). No suitable node: None.

Pure onnx / numpy / onnxruntime (no deep-learning framework): the test process may run it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

MIN_DIFF = 1e-3  # the outputs must move by more than this (max |diff|) on the images
MAX_TRIES = 24  # candidates tried per fault before giving up (each costs one onnxruntime run)
RAISES = 6  # activation bounds raised before any is lowered
WEIGHTED = ("Conv", "Gemm", "MatMul")
FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
ACTIVATIONS = ("Relu", "Gelu", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh", "Elu")


@dataclass(frozen=True)
class Expected:
    """What convdiff must report for one injected fault: a finding of ``stage`` whose kind is
    one of ``kind_options`` naming ``node_name`` (or one of ``also``: the other nodes a
    multi-node edit removed, e.g. the ops of a decomposed GELU)."""

    fault: str
    stage: str
    kind_options: tuple[str, ...]
    node_name: str
    change: str  # what was edited, one line
    max_abs_diff: float  # how far the outputs moved on the images
    also: tuple[str, ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        return (self.node_name, *self.also)

    def named_by(self, findings: list[dict[str, Any]]) -> bool:
        """Whether one of ``findings`` (report.json dicts) is this fault at its stage and layer."""
        return any(
            f["stage"] == self.stage
            and f["kind"] in self.kind_options
            and (f.get("target_layer") in self.names or f.get("source_layer") in self.names)
            for f in findings
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "stage": self.stage,
            "kind_options": list(self.kind_options),
            "node_name": self.node_name,
            "also": list(self.also),
            "change": self.change,
            "max_abs_diff": self.max_abs_diff,
        }


# A candidate: the node's name, the nodes the edit removes besides it, and the edit (applied
# to a copy of the model; returns a one-line description of what it changed).
Edit = Callable[[onnx.ModelProto], str]
Candidate = tuple[str, tuple[str, ...], Edit]


# -- reading the graph -------------------------------------------------------------------------


class Graph:
    """Lookups over one model's graph: initializers, Constant nodes, producers, consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inputs = {i.name for i in model.graph.input} - set(self.inits)
        self.outputs = {o.name for o in model.graph.output}
        self.shapes, self.types = _shapes(model)

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output, else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def inner(self, node: onnx.NodeProto) -> bool:
        """Neither reads the graph input nor writes a graph output."""
        return not (set(node.input) & self.inputs or set(node.output) & self.outputs)

    def weight_index(self, node: onnx.NodeProto) -> int | None:
        """The input index of a Conv/Gemm/MatMul's constant float weight, else None."""
        if node.op_type not in WEIGHTED:
            return None
        order = (1, 0) if node.op_type == "MatMul" else (1,)
        for index in order:
            if index >= len(node.input):
                continue
            value = self.const(node.input[index])
            if value is not None and value.dtype.kind == "f" and value.ndim >= 2:
                return index
        return None

    def weighted(self) -> list[onnx.NodeProto]:
        """The weighted layers without the first and the last one (graph order)."""
        found = [n for n in self.nodes if self.weight_index(n) is not None]
        return found[1:-1]

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)


def _shapes(model: onnx.ModelProto) -> tuple[dict[str, tuple[Any, ...]], dict[str, int]]:
    """Every tensor's inferred shape (dims as ints or names; None where unknown) and element
    type (``onnx.TensorProto`` codes)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an inference failure only costs the shape-based choices
        inferred = model
    shapes, types = {}, {}
    graph = inferred.graph
    for info in itertools.chain(graph.value_info, graph.input, graph.output):
        tensor = info.type.tensor_type
        types[info.name] = tensor.elem_type
        if tensor.HasField("shape"):
            shapes[info.name] = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor.shape.dim
            )
    for init in graph.initializer:
        shapes[init.name], types[init.name] = tuple(init.dims), init.data_type
    return shapes, types


def middle_first(graph: Graph, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` that neither read the graph input nor write its output, nearest to the middle
    of the network first."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    middle = len(graph.nodes) / 2
    inner = [n for n in nodes if graph.inner(n)]
    return sorted(inner, key=lambda n: abs(index[id(n)] - middle))


# -- editing a copy ----------------------------------------------------------------------------


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def set_input(model: onnx.ModelProto, node_name: str, index: int, value: np.ndarray) -> None:
    """Give ``node_name``'s input ``index`` the constant ``value``: in place when it is an
    initializer only this node reads (as a converter would have written it), else as a new
    initializer only this node reads (a shared weight or a Constant node stays as it was)."""
    node = _node(model, node_name)
    name = node.input[index]
    readers = sum(name in n.input for n in model.graph.node)
    inits = {i.name: i for i in model.graph.initializer}
    if name in inits and readers == 1:
        dtype = numpy_helper.to_array(inits[name]).dtype
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return
    fresh = f"{node_name or node.op_type}_fault_{index}"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), fresh))
    node.input[index] = fresh


def set_attr(model: onnx.ModelProto, node_name: str, key: str, value: Any) -> None:
    node = _node(model, node_name)
    for attr in node.attribute:
        if attr.name == key:
            node.attribute.remove(attr)
            break
    node.attribute.append(helper.make_attribute(key, value))


def attr(node: onnx.NodeProto, key: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def bypass(model: onnx.ModelProto, output: str, replacement: str) -> None:
    """Rewire every reader of ``output`` to ``replacement``, then drop the nodes nothing reads
    any more (the bypassed ones)."""
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == output:
                node.input[i] = replacement
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not set(n.output) & read]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)


# -- the faults: each yields candidates ------------------------------------------------------


def _weight_edits(
    graph: Graph, change: Callable[[np.ndarray], np.ndarray | None], label: str
) -> Iterator[Candidate]:
    for node in middle_first(graph, graph.weighted()):
        index = graph.weight_index(node)
        assert index is not None
        new = change(graph.const(node.input[index]))
        if new is None:
            continue

        def edit(model: onnx.ModelProto, n: str = node.name, i: int = index, v=new) -> str:
            set_input(model, n, i, v)
            return f"{label} of {n} ({list(v.shape)})"

        yield node.name, (), edit


def _transpose_square(w: np.ndarray) -> np.ndarray | None:
    if w.ndim == 2 and w.shape[0] == w.shape[1]:
        return w.T.copy()
    if w.ndim == 4 and w.shape[0] == w.shape[1] and w.shape[2:] == (1, 1):
        return w.transpose(1, 0, 2, 3).copy()
    return None


def transposed_square_weight(graph: Graph) -> Iterator[Candidate]:
    # a grouped 1x1 conv has weight [O, I/g, 1, 1]: square only when g == 1
    yield from _weight_edits(graph, _transpose_square, "stored W^T as the weight")


def zeroed_weight(graph: Graph) -> Iterator[Candidate]:
    yield from _weight_edits(graph, np.zeros_like, "zeroed the weight")


def scaled_weight(graph: Graph) -> Iterator[Candidate]:
    yield from _weight_edits(graph, lambda w: w * np.asarray(1.5, w.dtype), "weight x 1.5")


def layernorm_epsilon(graph: Graph) -> Iterator[Candidate]:
    """A LayerNormalization's epsilon, or the epsilon Add of a decomposed one (ReduceMean of
    the squares + eps -> Sqrt), set to 0.1."""
    nodes = [n for n in graph.nodes if n.op_type == "LayerNormalization" or _epsilon_add(graph, n)]
    for node in middle_first(graph, nodes):
        if node.op_type == "LayerNormalization":

            def edit(model: onnx.ModelProto, n: str = node.name) -> str:
                before = attr(_node(model, n), "epsilon", 1e-5)
                set_attr(model, n, "epsilon", 0.1)
                return f"LayerNormalization {n} epsilon {before:g} -> 0.1"

        else:
            index = _epsilon_add(graph, node)
            assert index is not None
            eps = graph.const(node.input[index])

            def edit(model: onnx.ModelProto, n: str = node.name, i: int = index, e=eps) -> str:
                set_input(model, n, i, np.full_like(e, 0.1))
                return f"decomposed LayerNorm epsilon (Add {n}) {float(e.ravel()[0]):g} -> 0.1"

        yield node.name, (), edit


def _epsilon_add(graph: Graph, node: onnx.NodeProto) -> int | None:
    """The input index of the epsilon of an ``Add(variance, eps) -> Sqrt`` node, else None."""
    if node.op_type != "Add" or not any(
        c.op_type == "Sqrt" for c in graph.consumers.get(node.output[0], [])
    ):
        return None
    for index, name in enumerate(node.input):
        value = graph.const(name)
        if value is not None and value.size == 1 and 0 < float(value.ravel()[0]) <= 1e-3:
            return index
    return None


def softmax_axis(graph: Graph) -> Iterator[Candidate]:
    """A Softmax over another axis: the last but one (an attention map's rows instead of its
    columns), or the last when it was another."""
    for node in middle_first(graph, [n for n in graph.nodes if n.op_type == "Softmax"]):
        rank = graph.rank(node.input[0])
        axis = attr(node, "axis", -1 if graph.model.opset_import[0].version >= 13 else 1)
        if rank is not None and axis < 0:
            axis += rank
        last = (rank - 1) if rank is not None else -1
        new = last - 1 if axis in (last, -1) else last
        if rank is not None and (new < 0 or rank < 2):
            continue

        def edit(model: onnx.ModelProto, n: str = node.name, a: int = axis, b: int = new) -> str:
            set_attr(model, n, "axis", b)
            return f"Softmax {n} axis {a} -> {b}"

        yield node.name, (), edit


def activation_bound(graph: Graph) -> Iterator[Candidate]:
    """A Clip's max raised (ReLU6: 6 -> 20; else x 3) or a HardSigmoid's alpha x 1.5, in the
    :data:`RAISES` middle-most nodes; then each Clip's max halved (6 -> 3). Raising first: it
    is the usual converter fault, but calibrated activations seldom pass 6, so a raised bound
    often moves nothing, where a lowered one does."""
    nodes = middle_first(graph, [n for n in graph.nodes if n.op_type in ("Clip", "HardSigmoid")])
    for node in nodes[:RAISES]:
        if node.op_type == "HardSigmoid":
            alpha = float(attr(node, "alpha", 0.2))

            def edit(model: onnx.ModelProto, n: str = node.name, a: float = alpha) -> str:
                set_attr(model, n, "alpha", a * 1.5)
                return f"HardSigmoid {n} alpha {a:g} -> {a * 1.5:g}"

            yield node.name, (), edit
        else:
            yield from _clip_max(graph, node, lambda top: 20.0 if top == 6.0 else top * 3)
    for node in nodes:
        if node.op_type == "Clip":
            yield from _clip_max(graph, node, lambda top: top / 2)


def _clip_max(
    graph: Graph, node: onnx.NodeProto, change: Callable[[float], float]
) -> Iterator[Candidate]:
    """The edit of a Clip's finite positive max (an input since opset 11, else an attribute)."""
    if len(node.input) >= 3 and node.input[2]:
        hi = graph.const(node.input[2])
        if hi is None or not np.isfinite(hi).all() or float(hi.ravel()[0]) <= 0:
            return
        top = float(hi.ravel()[0])

        def edit(model: onnx.ModelProto, n: str = node.name, h=hi, t=top) -> str:
            set_input(model, n, 2, np.full_like(h, change(t)))
            return f"Clip {n} max {t:g} -> {change(t):g}"

        yield node.name, (), edit
    elif attr(node, "max") is not None and len(node.input) == 1:  # opset < 11
        top = float(attr(node, "max"))

        def edit(model: onnx.ModelProto, n: str = node.name, t=top) -> str:
            set_attr(model, n, "max", change(t))
            return f"Clip {n} max {t:g} -> {change(t):g}"

        yield node.name, (), edit


def pads(graph: Graph) -> Iterator[Candidate]:
    """A padded Conv's pads all moved to the begin of each axis ([1,1,1,1] -> [2,2,0,0]): the
    output keeps its shape, the window shifts by one pixel."""
    nodes = [
        n
        for n in graph.nodes
        if n.op_type == "Conv"
        and attr(n, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and any(attr(n, "pads", []) or [])
    ]
    for node in middle_first(graph, nodes):
        before = list(attr(node, "pads"))
        half = len(before) // 2
        after = [before[i] + before[i + half] for i in range(half)] + [0] * half

        def edit(model: onnx.ModelProto, n: str = node.name, a=before, b=after) -> str:
            set_attr(model, n, "pads", b)
            return f"Conv {n} pads {a} -> {b}"

        yield node.name, (), edit


def dropped_activation(graph: Graph) -> Iterator[Candidate]:
    """An activation left out, its readers rewired to its input: a Relu/Gelu/Sigmoid/HardSwish/
    ... node, or the five ops of a GELU decomposed around Erf."""
    nodes = [n for n in graph.nodes if n.op_type in ACTIVATIONS or _gelu(graph, n)]
    for node in middle_first(graph, nodes):
        if node.op_type == "Erf":
            found = _gelu(graph, node)
            assert found is not None
            source, last, removed = found
            also = tuple(n for n in removed if n != node.name)
        else:
            source, last, also = node.input[0], node.output[0], ()

        def edit(model: onnx.ModelProto, n=node, s=source, out=last) -> str:
            bypass(model, out, s)
            return f"dropped {n.op_type} {n.name} (readers now read {s})"

        yield node.name, also, edit


def _gelu(graph: Graph, erf: onnx.NodeProto) -> tuple[str, str, list[str]] | None:
    """For the Erf of ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (in any order of the Muls): x, the
    GELU's output and the names of its nodes; else None."""
    if erf.op_type != "Erf":
        return None
    scale = graph.producer.get(erf.input[0])
    if scale is None or scale.op_type not in ("Div", "Mul"):
        return None
    x = next((i for i in scale.input if graph.const(i) is None), None)
    if x is None:
        return None
    chain, tensor = [scale, erf], erf.output[0]
    for _ in range(3):  # Add(1), Mul(x), Mul(0.5)
        readers = graph.consumers.get(tensor, [])
        if len(readers) != 1 or readers[0].op_type not in ("Add", "Mul"):
            break
        chain.append(readers[0])
        tensor = readers[0].output[0]
    if len(chain) < 4 or not any(x in n.input for n in chain[2:]):
        return None
    return x, tensor, [n.name for n in chain]


def swapped_concat(graph: Graph) -> Iterator[Candidate]:
    """The first two inputs of a Concat that are distinct computed float tensors of one shape,
    swapped (the output keeps its shape; its channels come in another order). Integer Concats
    build shapes (a Reshape's target), not features: left alone."""
    concats = [
        n for n in graph.nodes if n.op_type == "Concat" and graph.types.get(n.output[0]) in FLOATS
    ]
    for node in middle_first(graph, concats):
        live = [i for i, name in enumerate(node.input) if graph.const(name) is None]
        pair = next(
            (
                (i, j)
                for i, j in itertools.combinations(live, 2)
                if node.input[i] != node.input[j]
                and graph.shapes.get(node.input[i]) == graph.shapes.get(node.input[j])
                and graph.shapes.get(node.input[i]) is not None
            ),
            None,
        )
        if pair is None:
            continue

        def edit(model: onnx.ModelProto, n: str = node.name, p=pair) -> str:
            target = _node(model, n)
            a, b = target.input[p[0]], target.input[p[1]]
            target.input[p[0]], target.input[p[1]] = b, a
            return f"Concat {n} inputs {p[0]} and {p[1]} swapped ({a}, {b})"

        yield node.name, (), edit


# fault -> (candidates, stage, kinds the stage may call it)
FAULTS: dict[str, tuple[Callable[[Graph], Iterator[Candidate]], str, tuple[str, ...]]] = {
    "transposed_square_weight": (transposed_square_weight, "weights", ("transposed",)),
    "zeroed_weight": (zeroed_weight, "weights", ("zeroed",)),
    "scaled_weight": (scaled_weight, "weights", ("scale",)),
    "layernorm_epsilon": (layernorm_epsilon, "hyperparams", ("epsilon",)),
    "softmax_axis": (softmax_axis, "hyperparams", ("axis",)),
    "activation_bound": (activation_bound, "hyperparams", ("clip_bounds", "activation", "alpha")),
    "pads": (pads, "hyperparams", ("pads", "asymmetric_pads", "lost_pads")),
    "dropped_activation": (dropped_activation, "graph", ("missing_layer",)),
    "swapped_concat": (swapped_concat, "graph", ("reordered", "first_divergence")),
}


# -- running and injecting ---------------------------------------------------------------------


def sample_inputs(model: onnx.ModelProto, count: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal images of the model's (first) input shape, ``count`` of them
    stacked on the batch axis (a named or unknown dim is 1, a batch dim then ``count``)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    rng = np.random.default_rng(seed)
    return rng.standard_normal([count, *shape[1:]]).astype(np.float32)


def run_images(model: onnx.ModelProto | bytes, images: np.ndarray) -> np.ndarray:
    """The first output of ``model`` on each image (one at a time: exports fix the batch at 1)
    under onnxruntime, stacked."""
    import onnxruntime

    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a candidate that fails to run is skipped, not logged
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = feed.shape
    if len(shape) == 4 and images.shape[1:] != tuple(shape[1:]):
        if isinstance(shape[1], int) and images.shape[-1] == shape[1]:
            images = images.transpose(0, 3, 1, 2)  # NHWC images for an NCHW model
        elif isinstance(shape[3], int) and images.shape[1] == shape[3]:
            images = images.transpose(0, 2, 3, 1)
    rows = [session.run(None, {feed.name: images[i : i + 1]})[0][0] for i in range(len(images))]
    return np.stack(rows)


def inject(
    source: Path | str,
    fault: str,
    out: Path | str,
    images: np.ndarray | None = None,
    min_diff: float = MIN_DIFF,
    max_tries: int = MAX_TRIES,
) -> Expected | None:
    """Write ``source`` with ``fault`` edited into the first suitable node (middle first) whose
    edit keeps the model valid and moves its outputs on ``images`` (NCHW or NHWC; default:
    :func:`sample_inputs`) by more than ``min_diff``; return what convdiff must report, or None
    (nothing written) when no node is suitable."""
    candidates, stage, kinds = FAULTS[fault]
    model = onnx.load(str(source))
    graph = Graph(model)
    x = sample_inputs(model) if images is None else images
    reference = run_images(model, x)
    data = model.SerializeToString()
    for name, also, edit in itertools.islice(candidates(graph), max_tries):
        copy = onnx.ModelProto.FromString(data)
        change = edit(copy)
        try:
            onnx.checker.check_model(copy)
            moved = float(np.abs(run_images(copy, x) - reference).max())
        except Exception:  # an invalid edit at this node: try the next one
            continue
        if moved > min_diff:
            onnx.save(copy, str(out))
            return Expected(fault, stage, kinds, name, change, moved, also)
    return None


__all__ = ["FAULTS", "MIN_DIFF", "Expected", "Graph", "inject", "run_images", "sample_inputs"]
