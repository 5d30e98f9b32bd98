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
  into the range, :func:`convdiff.ir.onnx_quant.folded_clamp`) the float input goes through
  the source's activation, known from the localization (:func:`source_activations`), else
  through ``Clip(0, top of the range)``: the file's own clamp, which images other than the
  calibration's may pass (ResNet101's ReLUs clamped so: 0.067 from the source with every layer
  in float). A pair whose only reader is the graph's output is the layer's own: it goes too
  (else a classifier's softmax stays rounded to 1/255).

QOperator files (``QLinearConv``, ``QGemm``: integer tensors between the ops) have no
fallback here: repair restores their weights as its patch does for any precision finding.

Float weights are the source's, brought into the file's layout by the repair planner from the
localization's precision findings (``ctx.stage_context``, the aligned canonical graphs); without
a localization the float op computes on the dequantized weight (its activations are float,
its weight is still the int8 grid's).

The measure (:func:`candidates`): each layer's error *at the output when it alone is
quantized* -- the all-float model (every layer as :func:`write` makes it) with that one layer
computing as the file does, against the all-float model, ``sum((y_L - y_float)^2)`` over the
images, given as its share of the sum over all layers. One onnxruntime session does all of it:
:func:`switchable` writes the file so that a mask input switches each layer between its float
and its quantized inputs, and a pass per layer sets one bit. Why this and not a local
measure: onnxruntime's ``qdq_loss_debug`` compares each tensor of the float and the QDQ model
(a cumulative error, largest near the output whatever caused it), and a layer's own
noise-to-signal ratio (its quantized output against a float copy on the same inputs, one pass
for all layers) ignores how much of that noise reaches the output. Measured on MobileNetV2
(QDQ, seeded random weights, 64 quantized layers, the source's float weights): falling back
the top 32 by local noise-to-signal ratio left 64% of the output error and 56% top-1
discrepancy, and reaching 0% took 60 layers; by this measure the top 32 leave 3.7% and 12.5%,
and 48 layers reach 0%. The cost is a pass per layer on ``MEASURE_IMAGES`` images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convdiff.core.arrays import read_images
from convdiff.ir import onnx_quant
from convdiff.repair.appliers import onnx as onnx_applier
from convdiff.repair.appliers.dispatch import SkipEdit
from convdiff.repair.fallback import Candidate, FallbackContext
from convdiff.runtime import client

MEASURE = "output error with the layer alone quantized in the all-float model, as a share"
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
    """Every quantized layer with its share of the output error when it alone is quantized
    (module docstring), measured in an onnx worker: one session, one pass per layer."""
    model = onnx.load(str(ctx.target))
    layers = layers_of(model)
    if not layers:
        return []
    ctx.work.mkdir(parents=True, exist_ok=True)
    path = ctx.work / "fallback-measure.onnx"
    weights, activations = float_weights(ctx, model), source_activations(ctx)
    onnx.save(switchable(model, layers, weights, activations), str(path))
    outcome = client.fallback_errors(ctx.pool, path, ctx.images, len(layers))
    if not outcome:
        raise RuntimeError(f"measuring the layers failed: {outcome.error_type}: {outcome.message}")
    errors = outcome.value["errors"]
    total = sum(errors) or 1.0
    measure = f"{MEASURE} (onnxruntime, {outcome.value['images']} images)"
    return [
        Candidate(layer.name, error / total, measure)
        for layer, error in zip(layers, errors, strict=True)
    ]


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
    activations = source_activations(ctx)
    g = onnx_quant.Graph(model)
    for name in layers:
        node = _node(model, name)
        if node.op_type in onnx_quant.QUANT_OPS:  # no float weight known: the dequantized one
            onnx_applier._float_op(model, node)
        elif by_name[name].kind == "qdq":
            _read_float_inputs(model, g, node, activations)
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
        _PLANNED.clear()  # one target's float weights at a time (a ResNet101's are 170 MB)
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
    model: onnx.ModelProto,
    g: onnx_quant.Graph,
    name: str,
    activations: dict[str, tuple[float, float]],
) -> str:
    """The float tensor a pair-dequantized activation ``name`` stands for: the tensor before
    its QuantizeLinear -- through the activation the quantizer folded into the pair, where it
    did: the source's (``activations``: a Relu, or a Clip of its bounds), else the pair's own
    range (the node is added once, appended: the caller puts the nodes in order)."""
    dq = g.producer[name]
    q = g.producer[dq.input[0]]
    clamp = onnx_quant.folded_clamp(g, q)
    if clamp is None:
        return q.input[0]
    low, high = activations.get(onnx_quant.file_name(q), clamp)
    out = f"{q.input[0]}/float_activation"
    if out not in g.producer:
        label = f"{onnx_quant.file_name(q)}/float_activation"
        if low == 0.0 and high == float("inf"):
            nodes, consts = [helper.make_node("Relu", [q.input[0]], [out], label)], []
        else:
            nodes, _, consts = onnx_quant.clip_node(q.input[0], out, label, (low, high))
        model.graph.node.append(nodes[0])
        model.graph.initializer.extend(consts)
        g.producer[out] = nodes[0]
    return out


def source_activations(ctx: FallbackContext) -> dict[str, tuple[float, float]]:
    """QuantizeLinear name -> bounds of the source's activation the quantizer folded into that
    pair (``(0, inf)`` a ReLU, ``(0, 6)`` a ReLU6), from the localization: the layer the twin's
    clip of the pair is aligned with. The file alone cannot tell: its pair clamps at the largest
    value calibration saw, which another image may pass."""
    stage = ctx.stage_context
    if stage is None:
        return {}
    from convdiff.stages import near_pairs
    from convdiff.stages.hyperparams import BOUNDS

    source_of = {p.b: p.a for p in stage.alignment.pairs}
    source_of |= {ub.layer: ua.layer for ua, ub in near_pairs(stage)}
    found = {}
    for lid, evidence in stage.quant.items():
        a = source_of.get(lid)
        if "clamp" not in evidence or a is None or lid not in stage.names_b:
            continue
        layer = stage.a[a]
        if layer.op == "clip":
            found[stage.names_b[lid]] = (float(layer.attrs["min"]), float(layer.attrs["max"]))
        elif layer.op in BOUNDS:
            found[stage.names_b[lid]] = BOUNDS[layer.op]
    return found


def _read_float_inputs(
    model: onnx.ModelProto,
    g: onnx_quant.Graph,
    node: onnx.NodeProto,
    activations: dict[str, tuple[float, float]],
) -> None:
    """Rewire ``node``: activations from before their pairs, a still dequantized weight kept
    (no float value known), and a pair that only the graph's output reads removed."""
    for i, name in enumerate(node.input):
        if name and _dequantized(g, name) == "pair":
            node.input[i] = _float_input(model, g, name, activations)
    out = node.output[0]
    q = g.only_reader(out, "QuantizeLinear")
    dq = g.only_reader(q.output[0], "DequantizeLinear") if q is not None else None
    if dq is not None and dq.output[0] in g.outputs and not g.readers.get(dq.output[0]):
        node.output[0] = dq.output[0]  # the graph's output, computed in float
        model.graph.node.remove(q)
        model.graph.node.remove(dq)


# -- the measuring model ---------------------------------------------------------------------

MASK = "fallback_mask"  # the switchable model's second input: 1 = that layer quantized
# images the measure runs on: one pass per layer is the cost, and the ranking is what counts --
# on MobileNetV2 (QDQ, 64 layers) the first 4 of the 16 sample images rank the layers as all 16
# do (the same prefix curve), in a third of the time
MEASURE_IMAGES = 4


def switchable(
    model: onnx.ModelProto,
    layers: list[Layer],
    weights: dict[tuple[str, str], np.ndarray],
    activations: dict[str, tuple[float, float]] | None = None,
) -> onnx.ModelProto:
    """``model`` in which layer ``k`` computes quantized when ``fallback_mask[k]`` is 1 and in
    float when it is 0: each input it reads quantized becomes ``f + s * (q - f)`` (``f`` the
    float tensor: before the pair, the float weight; ``q`` what the file feeds it), an integer
    op's output the same mix of its chain's end and its float op's. All zeros is the file with
    every layer in float (:func:`write`'s result), all ones the file as it is."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = onnx_quant.Graph(m)
    m.graph.input.append(helper.make_tensor_value_info(MASK, onnx.TensorProto.FLOAT, [len(layers)]))
    for k, layer in enumerate(layers):
        node = _node(m, layer.name)
        switch = f"{layer.name}/switch"
        index = numpy_helper.from_array(np.array(k, dtype=np.int64), f"{switch}/index")
        m.graph.initializer.append(index)
        m.graph.node.append(helper.make_node("Gather", [MASK, index.name], [switch], switch))
        if layer.kind == "integer":
            _switch_integer(m, g, node, layer.name, switch, weights)
        else:
            _switch_qdq(m, g, node, layer.name, switch, weights, activations or {})
    _order(m)
    return m


def _mix(m: onnx.ModelProto, f: str, q: str, switch: str, out: str) -> None:
    """``out = f + switch * (q - f)``."""
    m.graph.node.extend(
        [
            helper.make_node("Sub", [q, f], [f"{out}/delta"], f"{out}/delta"),
            helper.make_node("Mul", [switch, f"{out}/delta"], [f"{out}/scaled"], f"{out}/scaled"),
            helper.make_node("Add", [f, f"{out}/scaled"], [out], f"{out}/mix"),
        ]
    )


def _switch_integer(
    m: onnx.ModelProto,
    g: onnx_quant.Graph,
    node: onnx.NodeProto,
    name: str,
    switch: str,
    weights: dict[tuple[str, str], np.ndarray],
) -> None:
    made, _, consts = onnx_quant.float_op(g, node, "repair")
    end = made[-1].output[0]
    for const in consts:  # the source's float weight where the localization gave it
        field = const.name.rpartition(".")[2]
        if (name, field) in weights:
            const.CopyFrom(numpy_helper.from_array(weights[(name, field)], const.name))
    made[-1].output[0], made[-1].name = f"{end}/float", f"{name}/float"
    g.producer[end].output[0] = f"{end}/quantized"  # the integer chain's last node
    m.graph.node.extend(made)
    m.graph.initializer.extend(consts)
    _mix(m, f"{end}/float", f"{end}/quantized", switch, end)


def _switch_qdq(
    m: onnx.ModelProto,
    g: onnx_quant.Graph,
    node: onnx.NodeProto,
    name: str,
    switch: str,
    weights: dict[tuple[str, str], np.ndarray],
    activations: dict[str, tuple[float, float]],
) -> None:
    slots = {1: "weight", 2: "bias"} if node.op_type in onnx_applier.WEIGHTED else {}
    for i, tensor in enumerate(node.input):
        kind = _dequantized(g, tensor) if tensor else None
        if kind == "pair":
            f = _float_input(m, g, tensor, activations)
        elif kind == "weight" and (name, slots.get(i, "")) in weights:
            f = f"{name}.float_{slots[i]}"
            m.graph.initializer.append(numpy_helper.from_array(weights[(name, slots[i])], f))
        else:
            continue
        node.input[i] = f"{name}/input{i}"
        _mix(m, f, tensor, switch, node.input[i])
    q = g.only_reader(node.output[0], "QuantizeLinear")
    dq = g.only_reader(q.output[0], "DequantizeLinear") if q is not None else None
    if dq is not None and dq.output[0] in g.outputs and not g.readers.get(dq.output[0]):
        out = dq.output[0]  # the graph's output pair is this layer's (see write)
        dq.output[0] = f"{out}/quantized"
        _mix(m, node.output[0], f"{out}/quantized", switch, out)


def _order(model: onnx.ModelProto) -> None:
    """Each node after its inputs' producers (new nodes are appended at the end)."""
    onnx_applier._topological_order(model)


# -- the worker's side ----------------------------------------------------------------------


def switch_errors(model: str, images: str, layers: int) -> dict[str, Any]:
    """Run the switchable ``model`` (:func:`switchable`; no QDQ op of it is fused, since every
    DequantizeLinear feeds a mix: they compute exactly their definition) on the NHWC images of
    ``images``: all layers in float, all quantized, and each layer alone quantized. Returns
    ``errors[k]``, the summed squared difference of the output with layer ``k`` alone
    quantized from the all-float output, and ``quantized``, that of the file as it is."""
    import onnxruntime as ort

    from convdiff.frameworks import layout_of

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    first = next(i for i in session.get_inputs() if i.name != MASK)
    shape = [d if isinstance(d, int) and d > 0 else None for d in first.shape]
    x = read_images(images, limit=MEASURE_IMAGES)
    if layout_of(shape, "NCHW") == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    batches = list(_batches(x, shape[0] if shape else None))

    def outputs(mask: np.ndarray) -> np.ndarray:
        runs = [session.run(None, {first.name: b, MASK: mask})[0] for b in batches]
        return np.concatenate(runs).astype(np.float64)

    floating = outputs(np.zeros(layers, np.float32))
    quantized = float(np.sum((outputs(np.ones(layers, np.float32)) - floating) ** 2))
    errors = []
    for k in range(layers):
        alone = np.zeros(layers, np.float32)
        alone[k] = 1.0
        errors.append(float(np.sum((outputs(alone) - floating) ** 2)))
    return {"errors": errors, "quantized": quantized, "images": sum(len(b) for b in batches)}


def _batches(x: np.ndarray, fixed: int | None) -> Iterator[np.ndarray]:
    """All images at once, or the model's fixed batch size at a time (a last partial batch
    left out)."""
    step = fixed or len(x)
    for i in range(0, len(x) - len(x) % step, step):
        yield np.ascontiguousarray(x[i : i + step])


__all__ = [
    "MEASURE",
    "Layer",
    "candidates",
    "layers_of",
    "quantized_layers",
    "switch_errors",
    "switchable",
    "write",
]
