"""An ONNX file TVM's frontend refuses, made importable without changing what it computes.

Legacy torch exports compute a Pad's widths at run time (``F.pad`` of TF-style SAME padding:
``Shape -> Gather -> arithmetic -> Concat -> Reshape(-1, 2) -> Slice(reverse) -> Transpose ->
Reshape -> Cast``), and TVM 0.27 refuses them ("Dynamic pads are not supported yet"). onnxslim
folds that chain, but not always right: its symbolic shape inference passes a Reshape's data
through flat (the target shape ignored), then applies the Slice that reverses the *rows* of the
(4, 2) pads to the flat list. The pads ``[0, 1, 0, 1, 0, 0, 0, 0]`` (W, H pairs) then come out as
``[0, 0, 1, 1, 0, 0, 0, 0]`` (pad top/left) instead of ``[0, 0, 0, 0, 0, 0, 1, 1]`` (bottom/right):
open_nsfw's first pool padded on the wrong side, max|diff| 0.009 on its probabilities
(onnxslim 0.1.98).

So :func:`fold_runtime_pads` evaluates such widths with onnxruntime itself and writes them as
initializers, and :func:`max_difference` lets the caller check any rewritten file against the
original on the same random input before it imports the rewrite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

# a rewrite computes what the original computes when max|diff| <= TOLERANCE * (1 + max|y|)
TOLERANCE = 1e-4


def fold_runtime_pads(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """``model`` with every Pad width computed at run time replaced by its value, and the nodes
    only that computation used removed; the Pads folded, by node name, with their widths.

    A width is folded only when onnxruntime gives the same value on two inputs that differ in
    their values and in every symbolic dimension (a batch of 1, then of 2): widths that follow
    the data or a dynamic dimension stay as they are. The model is returned unchanged (and the
    dict empty) when there is nothing to fold or onnxruntime cannot run it."""
    constant = {i.name for i in model.graph.initializer}
    constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    pads = [n for n in model.graph.node if n.op_type == "Pad" and len(n.input) > 1]
    targets = sorted({name for n in pads for name in n.input[1:] if name and name not in constant})
    if not targets:
        return model, {}
    try:
        first, second = (
            evaluate(model, targets, random_feed(model, seed=n, dim=n)) for n in (1, 2)
        )
    except Exception:  # onnxruntime refuses the file or the probe inputs: nothing to fold
        return model, {}
    values = {
        name: a for name, a, b in zip(targets, first, second, strict=True) if np.array_equal(a, b)
    }
    if not values:
        return model, {}
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    for name, value in values.items():
        folded.graph.initializer.append(numpy_helper.from_array(value, name))
    _prune(folded)
    done = {
        n.name or n.output[0]: [int(v) for v in values[n.input[1]].ravel()]
        for n in pads
        if n.input[1] in values
    }
    return folded, done


def max_difference(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> float:
    """max|diff| of the two models' outputs on one random input (batch 1), relative to
    ``1 + max|y|`` of the original: at most :data:`TOLERANCE` when they compute the same."""
    feed = random_feed(original, seed=0, dim=1)
    names = [o.name for o in original.graph.output]
    ours = evaluate(original, names, feed)
    theirs = evaluate(rewritten, [o.name for o in rewritten.graph.output], feed)
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if a.shape != b.shape:
            return float("inf")
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        scale = 1.0 + (float(np.abs(a64).max()) if a64.size else 0.0)
        worst = max(worst, float(np.abs(a64 - b64).max(initial=0.0)) / scale)
    return worst


def random_feed(model: onnx.ModelProto, *, seed: int, dim: int) -> dict[str, np.ndarray]:
    """One array per graph input: uniform in [-1, 1) for floats, zeros otherwise; a symbolic
    dimension is ``dim``."""
    rng = np.random.default_rng(seed)
    constant = {i.name for i in model.graph.initializer}
    feed = {}
    for inp in model.graph.input:
        if inp.name in constant:
            continue
        tensor = inp.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else dim for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.floating):
            feed[inp.name] = rng.uniform(-1, 1, shape).astype(dtype)
        else:
            feed[inp.name] = np.zeros(shape, dtype)
    return feed


def evaluate(
    model: onnx.ModelProto, names: list[str], feed: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """The tensors ``names`` of ``model`` (graph outputs or intermediate) on ``feed``, computed
    by onnxruntime's CPU provider."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_empty_tensor_value_info(n) for n in names if n not in outputs
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return [np.asarray(v) for v in session.run(names, feed)]


def _prune(model: onnx.ModelProto) -> None:
    """Remove the nodes and initializers no graph output depends on any more, and the nodes
    whose outputs are initializers now (in place)."""
    graph = model.graph
    provided = {i.name for i in graph.initializer}
    needed = {o.name for o in graph.output}
    kept: list[Any] = []
    for node in reversed(graph.node):
        if any(o in needed and o not in provided for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            needed.update(_subgraph_inputs(node))
    kept.reverse()
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Every name the node's subgraphs (If/Loop/Scan bodies) read: they may use outer ones."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                names.update(i for i in inner.input if i)
                names.update(_subgraph_inputs(inner))
    return names
