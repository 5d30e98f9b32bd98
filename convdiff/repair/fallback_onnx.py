"""Float fallback for ONNX files quantized by onnxruntime (:mod:`convdiff.repair.fallback`).

The *quantized layers* of a file are the ops its runtime computes on integers:

- ``ConvInteger`` / ``MatMulInteger`` (``quantize_dynamic``), each fed by a
  ``DynamicQuantizeLinear`` and followed by ``Cast -> Mul [-> Add]``. In float it is the float
  op reading the float activation, written by the ONNX applier's own rewrite
  (:func:`convdiff.repair.appliers.onnx._float_op`, which the patch's ``set_tensor`` uses too);
- in a QDQ file (``quantize_static``, ``QuantFormat.QDQ``), every op that reads a
  ``DequantizeLinear``: a Conv/Gemm/MatMul on a dequantized weight and on activations through
  ``QuantizeLinear -> DequantizeLinear`` pairs, and the ops with no weight whose inputs come
  through pairs (Add, pooling, Concat, Softmax, ...). In float its weight's (and bias's)
  DequantizeLinear is replaced by the float tensor, and each activation input that comes
  through a pair is read from the float tensor before the pair -- other readers of the pair
  keep it. Where the pair stood for an activation the quantizer removed (a ReLU/ReLU6 folded
  into the range, :func:`convdiff.ir.onnx_quant.folded_clamp`) the float input is that
  ``Clip(0, top)``. A pair whose only reader is the graph's output is the layer's own: it goes
  too (else a classifier's softmax stays rounded to 1/255).

Float weights are the source's, brought into the file's layout by the repair planner from the
localization's precision findings (``ctx.stage_context``, the aligned canonical graphs); without
a localization the float op computes on the dequantized weight (its activations are float,
its weight is still the int8 grid's).

The measure (:func:`candidates`): each layer's *local* error, in one pass of the file over the
images -- the file with a float copy of every quantized layer beside it, reading the very same
upstream tensors (the quantized model's state there), so the copy's output is what that
layer's fallback alone would compute. The contribution is the noise-to-signal power ratio of
the quantized output against the copy's, ``sum((y_q - y_f)^2) / sum(y_f^2)``: the inverse of
the SQNR that onnxruntime's own ``qdq_loss_debug`` reports (there per tensor and cumulative;
here per layer and local). Relative noise powers of successive layers roughly add up at the
output of a normalized network, so a layer's ratio is its share of the final error, whatever
the layer's scale; run unoptimized (as ``qdq_loss_debug`` runs), the QDQ ops compute exactly
their definition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convdiff.ir import onnx_quant
from convdiff.repair.appliers import onnx as onnx_applier
from convdiff.repair.appliers.dispatch import SkipEdit
from convdiff.repair.fallback import Candidate, FallbackContext
from convdiff.runtime import client

MEASURE = (
    "local noise-to-signal power of each layer's output, quantized vs in float on the same inputs"
)
PAIR_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


@dataclass(frozen=True)
class Layer:
    """One quantized op of the file."""

    name: str  # the file's name for it (onnx_quant.file_name): what write() takes
    kind: str  # "integer" (ConvInteger / MatMulInteger) or "qdq"


# -- the three functions of a fallback format ----------------------------------------------------


def quantized_layers(ctx: FallbackContext) -> int:
    """How many ops of the target compute on integers (0: a float file, nothing to do)."""
    return len(layers_of(onnx.load(str(ctx.target))))


def candidates(ctx: FallbackContext) -> list[Candidate]:
    """Every quantized layer with its local noise-to-signal ratio (module docstring), measured
    in one onnxruntime pass over ``ctx.images`` in an onnx worker."""
    model = onnx.load(str(ctx.target))
    layers = layers_of(model)
    if not layers:
        return []
    augmented, compared = with_float_copies(model, layers, float_weights(ctx, model))
    ctx.work.mkdir(parents=True, exist_ok=True)
    path = ctx.work / "fallback-measure.onnx"
    onnx.save(augmented, str(path))
    outcome = client.output_errors(ctx.pool, path, ctx.images, compared)
    if not outcome:
        raise RuntimeError(f"measuring the layers failed: {outcome.error_type}: {outcome.message}")
    ratios = outcome.value["ratios"]
    images = outcome.value["images"]
    measure = f"{MEASURE} (onnxruntime, {images} images)"
    return [Candidate(layer.name, float(ratios[layer.name]), measure) for layer in layers]


def write(ctx: FallbackContext, layers: list[str], out: Path) -> Path:
    """The target with ``layers`` in float (module docstring), checked and saved to ``out``."""
    model = onnx.load(str(ctx.target))
    by_name = {layer.name: layer for layer in layers_of(model)}
    unknown = [name for name in layers if name not in by_name]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a quantized layer of {ctx.target.name}")
    edits, tensors = _weight_edits(ctx, model, set(layers))
    if edits:  # the source's float weights, written by the ONNX applier
        data, _, _ = onnx_applier.apply(ctx.target, edits, tensors)
        model = onnx.load_from_string(data)
    g = onnx_quant.Graph(model)
    for name in layers:
        node = _node(model, name)
        if node.op_type in onnx_quant.QUANT_OPS:  # no float weight known: the dequantized one
            onnx_applier._float_op(model, node)
        elif by_name[name].kind == "qdq":
            _read_float_inputs(model, g, node)
            g = onnx_quant.Graph(model)
    onnx_quant._prune_dead(model)
    _order(model)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


# -- the quantized layers -------------------------------------------------------------------------


def layers_of(model: onnx.ModelProto) -> list[Layer]:
    """The ops the runtime computes on integers, in the file's order (module docstring)."""
    g = onnx_quant.Graph(model)
    found = []
    for node in model.graph.node:
        if node.op_type in ("ConvInteger", "MatMulInteger"):
            if g.const(node.input[1]) is not None:  # an integer weight (not two activations)
                found.append(Layer(onnx_quant.file_name(node), "integer"))
        elif node.op_type not in PAIR_OPS and node.domain in ("", "ai.onnx"):
            reads = [_dequantized(g, name) for name in node.input if name]
            if any(kind is not None for kind in reads):
                found.append(Layer(onnx_quant.file_name(node), "qdq"))
    return found


def _dequantized(g: onnx_quant.Graph, name: str) -> str | None:
    """``"weight"`` for a DequantizeLinear of a constant, ``"pair"`` for one of a
    QuantizeLinear (an activation's QDQ pair), else None."""
    dq = g.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    if g.const(dq.input[0]) is not None:
        return "weight"
    q = g.producer.get(dq.input[0])
    return "pair" if q is not None and q.op_type == "QuantizeLinear" else None


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if onnx_quant.file_name(n) == name)


# -- float weights --------------------------------------------------------------------------------


def float_weights(
    ctx: FallbackContext, model: onnx.ModelProto
) -> dict[tuple[str, str], np.ndarray]:
    """(layer, "weight"/"bias") -> the source's float tensor in the file's layout, for the layers
    the localization found a precision finding on; empty without a localization."""
    edits, tensors = _weight_edits(ctx, model, None)
    found = {}
    for edit in edits:
        node = _resolve(model, edit.layer)
        if node is not None:
            found[(onnx_quant.file_name(node), edit.field)] = tensors[edit.value]
    return found


_PLANNED: dict[tuple[str, int, int], tuple[list[Any], dict[str, np.ndarray]]] = {}


def _weight_edits(
    ctx: FallbackContext, model: onnx.ModelProto, layers: set[str] | None
) -> tuple[list[Any], dict[str, np.ndarray]]:
    """The repair planner's ``set_tensor`` edits of the precision findings (on ``layers``, or
    all), and their tensors: planned once per target file and localization."""
    stage = ctx.stage_context
    precision = [f for f in ctx.findings if getattr(f, "kind", "") == "precision"]
    if stage is None or not precision:
        return [], {}
    key = (str(ctx.target), ctx.target.stat().st_mtime_ns, id(stage))
    if key not in _PLANNED:
        from convdiff.repair.plan import plan

        patch = plan(stage, precision, ctx.source, ctx.target, "onnx", ctx.pool)
        edits = [e for e in patch.edits if e.action == "set_tensor"]
        _PLANNED[key] = edits, patch.tensors
    edits, tensors = _PLANNED[key]
    if layers is not None:
        edits = [e for e in edits if _file_name(model, e.layer) in layers]
    return edits, tensors


def _resolve(model: onnx.ModelProto, layer: str) -> onnx.NodeProto | None:
    """The node a finding names (the applier's lookup: names, outputs, tf2onnx aliases)."""
    try:
        return onnx_applier._find(model, layer)
    except SkipEdit:
        return None


def _file_name(model: onnx.ModelProto, layer: str) -> str | None:
    node = _resolve(model, layer)
    return None if node is None else onnx_quant.file_name(node)


# -- QDQ: a layer reads float tensors --------------------------------------------------------------


def _float_input(
    model: onnx.ModelProto, g: onnx_quant.Graph, name: str, suffix: str = "float"
) -> str:
    """The float tensor a pair-dequantized activation ``name`` stands for: the tensor before
    its QuantizeLinear, clamped where the pair folded an activation (the Clip is added once)."""
    dq = g.producer[name]
    q = g.producer[dq.input[0]]
    clamp = onnx_quant.folded_clamp(g, q)
    if clamp is None:
        return q.input[0]
    out = f"{q.input[0]}/{suffix}_clamp"
    if out not in g.producer:  # appended: the caller puts the nodes in order
        nodes, _, consts = onnx_quant.clip_node(q.input[0], out, f"{q.name}/{suffix}_clamp", clamp)
        model.graph.node.append(nodes[0])
        model.graph.initializer.extend(consts)
        g.producer[out] = nodes[0]
    return out


def _read_float_inputs(model: onnx.ModelProto, g: onnx_quant.Graph, node: onnx.NodeProto) -> None:
    """Rewire ``node``: activations from before their pairs, a still dequantized weight kept
    (no float value known), and a pair that only the graph's output reads removed."""
    for i, name in enumerate(node.input):
        if name and _dequantized(g, name) == "pair":
            node.input[i] = _float_input(model, g, name)
    out = node.output[0]
    q = g.only_reader(out, "QuantizeLinear")
    dq = g.only_reader(q.output[0], "DequantizeLinear") if q is not None else None
    if dq is not None and dq.output[0] in g.outputs and not g.readers.get(dq.output[0]):
        node.output[0] = dq.output[0]  # the graph's output, computed in float
        model.graph.node.remove(q)
        model.graph.node.remove(dq)


# -- the measuring model ---------------------------------------------------------------------


def with_float_copies(
    model: onnx.ModelProto,
    layers: list[Layer],
    weights: dict[tuple[str, str], np.ndarray],
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """``model`` with, beside each layer, a float copy reading the same upstream tensors, and
    both outputs as graph outputs; returns it and layer -> (quantized output, float output)."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    g = onnx_quant.Graph(model)
    compared: dict[str, tuple[str, str]] = {}
    for layer in layers:
        node = _node(augmented, layer.name)
        if layer.kind == "integer":
            made, _, consts = onnx_quant.float_op(g, node, "repair")
            copy, quantized = made[-1], made[-1].output[0]  # the chain's end, in float
        else:
            copy, consts, quantized = _qdq_copy(augmented, g, node, layer.name, weights)
        for const in consts:
            field = const.name.rpartition(".")[2]
            if (layer.name, field) in weights and layer.kind == "integer":
                const.CopyFrom(numpy_helper.from_array(weights[(layer.name, field)], const.name))
        copy.name = f"{layer.name}/float"
        copy.output[0] = f"{quantized}/float"
        augmented.graph.node.append(copy)
        augmented.graph.initializer.extend(consts)
        compared[layer.name] = (quantized, copy.output[0])
    for name in dict.fromkeys(t for pair in compared.values() for t in pair):
        augmented.graph.output.append(helper.make_empty_tensor_value_info(name))
    _order(augmented)
    return augmented, compared


def _qdq_copy(
    model: onnx.ModelProto,
    g: onnx_quant.Graph,
    node: onnx.NodeProto,
    name: str,
    weights: dict[tuple[str, str], np.ndarray],
) -> tuple[onnx.NodeProto, list[onnx.TensorProto], str]:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    consts = []
    slots = {1: "weight", 2: "bias"} if node.op_type in onnx_applier.WEIGHTED else {}
    for i, tensor in enumerate(node.input):
        kind = _dequantized(g, tensor) if tensor else None
        if kind == "pair":
            copy.input[i] = _float_input(model, g, tensor, "measure")
        elif kind == "weight" and (name, slots.get(i, "")) in weights:
            value = weights[(name, slots[i])]
            copy.input[i] = f"{name}.float_{slots[i]}"
            consts.append(numpy_helper.from_array(value.astype(np.float32), copy.input[i]))
    del copy.output[1:]
    return copy, consts, node.output[0]


def _order(model: onnx.ModelProto) -> None:
    """Each node after its inputs' producers (the copies were appended at the end)."""
    onnx_applier._topological_order(model)


# -- the worker's side ----------------------------------------------------------------------


def output_errors(model: str, images: str, pairs: dict[str, list[str]]) -> dict[str, Any]:
    """Run ``model`` (onnxruntime, no graph optimization: QDQ ops as defined) on the NHWC
    images of ``images`` and return, per name of ``pairs`` ``(a, b)``, ``sum((a-b)^2) /
    sum(b^2)`` over all images."""
    import onnxruntime as ort

    from convdiff.frameworks import layout_of

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else None for d in first.shape]
    with np.load(images) as data:
        x = data["x"].astype(np.float32)
    if layout_of(shape, "NCHW") == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    names = [o.name for o in session.get_outputs()]
    noise = dict.fromkeys(pairs, 0.0)
    signal = dict.fromkeys(pairs, 0.0)
    for batch in _batches(x, shape[0] if shape else None):
        values = dict(zip(names, session.run(None, {first.name: batch}), strict=True))
        for key, (a, b) in pairs.items():
            ya, yb = values[a].astype(np.float64), values[b].astype(np.float64)
            noise[key] += float(np.sum((ya - yb) ** 2))
            signal[key] += float(np.sum(yb**2))
    ratios = {k: noise[k] / signal[k] if signal[k] > 0 else 0.0 for k in pairs}
    return {"ratios": ratios, "images": len(x)}


def _batches(x: np.ndarray, fixed: int | None) -> Iterator[np.ndarray]:
    step = fixed or 1
    for i in range(0, len(x) - len(x) % step, step):
        yield np.ascontiguousarray(x[i : i + step])


__all__ = ["MEASURE", "Layer", "candidates", "layers_of", "quantized_layers", "write"]
