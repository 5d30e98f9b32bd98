"""Canonicalization: remove from a layer graph what converters legitimately change.

Converters rewrite graphs without changing what they compute: TFLite folds BatchNorm into the
convolution and fuses the activation; tf2onnx and onnx2keras wrap every convolution in NHWC/NCHW
transposes; Keras pads explicitly where ONNX pads inside the Conv; tf2onnx merges nested
concats; ONNX writes ReLU6 as ``Clip(0, 6)`` (which TVM imports as maximum + minimum). Two
graphs of the same model taken through different routes come out of :func:`canonicalize` with
the same layers and the same parameters (up to float rounding), so whatever still differs is a
real difference.

Each pass is a small function ``(graph) -> bool`` (changed?); :func:`canonicalize` runs them
to a fixed point on a copy. What a pass absorbs into a layer is recorded in ``layer.folded``;
a layer that absorbs its consumer (bias add, BatchNorm, scale, Clip's second half) takes that
consumer's raw tensor as its ``tensor`` (its output now), and dropped noise leaves its
consumers reading the producer, whose tensor is unchanged.
Pure numpy: runs anywhere, no framework.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from convdiff.ir.graph import CanonicalGraph, Layer

WEIGHTED = ("conv2d", "dense")


def canonicalize(graph: CanonicalGraph) -> CanonicalGraph:
    """A canonical copy of ``graph`` (the input is left untouched)."""
    g = copy.deepcopy(graph)
    passes: tuple[Callable[[CanonicalGraph], bool], ...] = (
        remove_dead,
        drop_noise,
        fold_pad,
        fold_min_max,
        name_activations,
        constant_matmul,
        fuse_bias,
        fold_batch_norm,
        fold_scale,
        fold_flatten_order,
        drop_global_pool_keepdims,
        flatten_concat,
    )
    # a pass changes one spot per call, so a fixed point takes about as many rounds as the
    # commonest fold has sites (104 BatchNorms in ResNet101): a fixed 50 left the rest unfolded
    for _ in range(4 * len(g.layers) + 10):  # a bound, not a budget: each round removes or
        if not any([p(g) for p in passes]):  # rewrites a layer for good
            break
    g.meta = {**g.meta, "canonical": True}
    return g


# -- graph surgery ---------------------------------------------------------------------------


def _remove(g: CanonicalGraph, layer: Layer) -> None:
    """Drop a single-input layer, wiring its consumers (and graph outputs) to its input."""
    source = layer.inputs[0]
    for other in g.layers:
        other.inputs = [source if i == layer.id else i for i in other.inputs]
    g.outputs = [source if o == layer.id else o for o in g.outputs]
    g.layers.remove(layer)
    g.reindex()


def _only_consumer(g: CanonicalGraph, layer: Layer) -> Layer | None:
    consumers = g.consumers(layer.id)
    if len(consumers) == 1 and layer.id not in g.outputs:
        return consumers[0]
    return None


def _per_channel(const: np.ndarray, channels: int, axis: int = 1) -> np.ndarray | None:
    """A constant that broadcasts along one channel axis only, as a [C] vector (else None)."""
    if const.size == 1:
        return np.full(channels, float(const.reshape(())), dtype=np.float32)
    if const.ndim <= axis or const.shape[axis] != channels or const.size != channels:
        return None
    return const.reshape(channels)


def _output_channels(layer: Layer, const: np.ndarray) -> np.ndarray | None:
    """A constant that broadcasts along ``layer``'s output channels only, as a [C] vector: a
    conv's axis 1, a dense layer's last axis (tokens x features in a transformer)."""
    channels = layer.params["weight"].shape[0]
    if layer.op == "dense" and const.size == channels and const.shape[-1:] == (channels,):
        return const.reshape(channels)
    return _per_channel(const, channels)


# -- passes ----------------------------------------------------------------------------------


def remove_dead(g: CanonicalGraph) -> bool:
    """Drop layers no output depends on (e.g. TFLite's shape arithmetic for a Flatten)."""
    live, todo = set(), list(g.outputs)
    while todo:
        lid = todo.pop()
        if lid in live:
            continue
        live.add(lid)
        todo.extend(g[lid].inputs)
    dead = [lay for lay in g.layers if lay.id not in live and lay.op != "input"]
    for layer in dead:
        g.layers.remove(layer)
    g.reindex()
    return bool(dead)


def drop_noise(g: CanonicalGraph) -> bool:
    """Identity, layout-only transposes (already ``identity``), squeeze/expand reshapes, and
    pads of zero width change no value: drop them."""
    for layer in g.layers:
        noise = layer.op == "identity" or (layer.op == "reshape" and layer.attrs.get("noise"))
        if layer.op == "pad" and not any(any(w) for w in layer.attrs.get("pad_width", [])):
            noise = True
        if _identity_broadcast(g, layer):
            noise = True
        if noise and len(layer.inputs) == 1:
            _remove(g, layer)
            return True
    return False


def _identity_broadcast(g: CanonicalGraph, layer: Layer) -> bool:
    """A broadcast of a tensor to the shape it has (torch.export writes one before each
    batched matmul)."""
    if layer.op != "other" or layer.attrs.get("tvm_op") != "relax.broadcast_to":
        return False
    return len(layer.inputs) == 1 and g[layer.inputs[0]].shape == layer.shape


def constant_matmul(g: CanonicalGraph) -> bool:
    """A tensor times a broadcast constant 2-D matrix (torch.export's ``linear`` without a
    bias, e.g. an attention projection) is a dense layer, as the same matmul is when the
    constant reaches it directly."""
    for layer in g.layers:
        if layer.op != "other" or layer.attrs.get("tvm_op") != "relax.matmul":
            continue
        if len(layer.inputs) != 2:
            continue
        const = g[layer.inputs[1]]
        values = list(const.params.values())
        if const.inputs or len(values) != 1 or values[0].ndim != 2:
            continue
        if len(g.consumers(const.id)) != 1 or const.id in g.outputs:
            continue
        layer.op, layer.inputs = "dense", [layer.inputs[0]]
        layer.attrs = {"units": int(values[0].shape[1])}
        layer.params = {"weight": np.ascontiguousarray(values[0].T)}
        layer.folded.append(f"{const.attrs.get('tvm_op', const.op)} {const.id}")
        g.layers.remove(const)
        g.reindex()
        return True
    return False


def fold_pad(g: CanonicalGraph) -> bool:
    """An explicit spatial zero pad before a convolution (or -inf before max pooling, zero
    before average pooling, which then counts the padding) becomes the op's own padding."""
    for pad in g.layers:
        if pad.op != "pad" or not pad.attrs.get("spatial_only") or pad.attrs["mode"] != "constant":
            continue
        target = _only_consumer(g, pad)
        if target is None:
            continue
        value = pad.attrs["value"]
        ok = (
            (target.op == "conv2d" and value == 0.0)
            or (target.op == "pool_max" and value == float("-inf"))
            or (
                target.op == "pool_avg"
                and value == 0.0
                and (target.attrs.get("count_include_pad") or not any(target.attrs["pads"]))
            )
        )
        if not ok:
            continue
        target.attrs["pads"] = [
            a + b for a, b in zip(target.attrs["pads"], pad.attrs["pads"], strict=False)
        ]
        if target.op == "pool_avg":
            target.attrs["count_include_pad"] = True
        target.folded.append(f"pad {pad.id} {pad.attrs['pads']}")
        _remove(g, pad)
        return True
    return False


def fold_min_max(g: CanonicalGraph) -> bool:
    """``maximum(x, a)`` then ``minimum(., b)`` with scalar constants is ``clip(a, b)``."""
    for layer in g.layers:
        if layer.op not in ("maximum", "minimum") or np.size(layer.params.get("const", [])) != 1:
            continue
        bound = float(layer.params["const"].reshape(()))
        lo, hi = (bound, float("inf")) if layer.op == "maximum" else (float("-inf"), bound)
        nxt = _only_consumer(g, layer)
        other = "minimum" if layer.op == "maximum" else "maximum"
        if nxt is not None and nxt.op == other and np.size(nxt.params.get("const", [])) == 1:
            second = float(nxt.params["const"].reshape(()))
            lo, hi = (lo, second) if other == "minimum" else (second, hi)
            layer.tensor = nxt.tensor
            _remove(g, nxt)
        layer.op, layer.attrs, layer.params = "clip", {"min": lo, "max": hi}, {}
        return True
    return False


def name_activations(g: CanonicalGraph) -> bool:
    """``clip(0, 6)`` is ReLU6 and ``clip(0, inf)`` is ReLU, whatever the converter wrote."""
    changed = False
    for layer in g.layers:
        if layer.op == "clip" and layer.attrs["min"] == 0.0:
            if layer.attrs["max"] == 6.0:
                layer.op, layer.attrs, changed = "relu6", {}, True
            elif layer.attrs["max"] == float("inf"):
                layer.op, layer.attrs, changed = "relu", {}, True
    return changed


def fuse_bias(g: CanonicalGraph) -> bool:
    """A per-output-channel constant added after a conv/dense is its bias."""
    for layer in g.layers:
        if layer.op not in WEIGHTED or "weight" not in layer.params:
            continue
        add = _only_consumer(g, layer)
        if add is None or add.op != "add" or "const" not in add.params:
            continue
        channels = layer.params["weight"].shape[0]
        bias = _output_channels(layer, add.params["const"])
        if bias is None:
            continue
        layer.params["bias"] = layer.params.get("bias", np.zeros(channels, np.float32)) + bias
        layer.folded.append(f"add {add.id}")
        layer.tensor = add.tensor
        _remove(g, add)
        return True
    return False


def fold_batch_norm(g: CanonicalGraph) -> bool:
    """Inference BatchNorm after a conv/dense folds into its weights and bias (as TFLite does)."""
    for layer in g.layers:
        if layer.op not in WEIGHTED or "weight" not in layer.params:
            continue
        bn = _only_consumer(g, layer)
        if bn is None or bn.op != "batch_norm" or bn.attrs.get("axis") != 1:
            continue
        p = {k: v.astype(np.float64) for k, v in bn.params.items()}
        scale = p["gamma"] / np.sqrt(p["var"] + bn.attrs["epsilon"])
        weight = layer.params["weight"].astype(np.float64)
        bias = layer.params.get("bias", np.zeros(weight.shape[0])).astype(np.float64)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        layer.params["weight"] = (weight * scale.reshape(shape)).astype(np.float32)
        layer.params["bias"] = ((bias - p["mean"]) * scale + p["beta"]).astype(np.float32)
        layer.folded.append(f"batch_norm {bn.id} epsilon={bn.attrs['epsilon']:g}")
        layer.tensor = bn.tensor
        _remove(g, bn)
        return True
    return False


def fold_scale(g: CanonicalGraph) -> bool:
    """A per-channel constant multiplication after a conv/dense (a decomposed BatchNorm)
    scales its weights and bias."""
    for layer in g.layers:
        if layer.op not in WEIGHTED or "weight" not in layer.params:
            continue
        mul = _only_consumer(g, layer)
        if mul is None or mul.op != "mul" or "const" not in mul.params:
            continue
        scale = _output_channels(layer, mul.params["const"])
        if scale is None:
            continue
        shape = (-1,) + (1,) * (layer.params["weight"].ndim - 1)
        layer.params["weight"] = layer.params["weight"] * scale.reshape(shape)
        if "bias" in layer.params:
            layer.params["bias"] = layer.params["bias"] * scale
        layer.folded.append(f"mul {mul.id}")
        layer.tensor = mul.tensor
        _remove(g, mul)
        return True
    return False


def fold_flatten_order(g: CanonicalGraph) -> bool:
    """A Flatten of an NHWC tensor orders features (h, w, c); the dense layer after it has its
    columns in that order. Reorder the columns to (c, h, w), the order of an NCHW Flatten."""
    for flat in g.layers:
        if flat.op != "flatten" or flat.attrs["order"] == [1, 2, 3]:
            continue
        order = flat.attrs["order"]
        dims = g[flat.inputs[0]].shape
        if all(dims[a] == 1 for a in order if a != 1):
            flat.attrs["order"] = [1, 2, 3]
            return True
        consumers = g.consumers(flat.id)
        if not consumers or any(c.op != "dense" for c in consumers):
            continue
        sizes = [dims[a] for a in order]
        back = [0] + [order.index(a) + 1 for a in (1, 2, 3)]
        for dense in consumers:
            w = dense.params["weight"]
            dense.params["weight"] = w.reshape(w.shape[0], *sizes).transpose(back).reshape(w.shape)
            dense.folded.append(f"flatten {flat.id} order {order} -> [1, 2, 3]")
        flat.attrs["order"] = [1, 2, 3]
        flat.tensor = ""  # the raw tensor holds the features in the old order: none equals it
        return True
    return False


def drop_global_pool_keepdims(g: CanonicalGraph) -> bool:
    """Whether global pooling keeps its 1x1 spatial axes is a reshape away: not a difference."""
    changed = False
    for layer in g.layers:
        if layer.op == "pool_global_avg" and "keepdims" in layer.attrs:
            del layer.attrs["keepdims"]
            changed = True
    return changed


def flatten_concat(g: CanonicalGraph) -> bool:
    """A concat feeding only another concat on the same axis is spliced into it: tf2onnx
    merges InceptionV3's nested concats (mixed9/mixed10: 4 inputs, two of them 2-input concats)
    into one of 6 inputs, TFLite keeps them nested; both compute the same tensor."""
    for outer in g.layers:
        if outer.op != "concat":
            continue
        for inner_id in outer.inputs:
            inner = g[inner_id]
            if inner.op != "concat" or inner.attrs.get("axis") != outer.attrs.get("axis"):
                continue
            if _only_consumer(g, inner) is not outer or outer.inputs.count(inner_id) != 1:
                continue
            at = outer.inputs.index(inner_id)
            outer.inputs[at : at + 1] = inner.inputs
            outer.folded.append(f"concat {inner.id}")
            g.layers.remove(inner)
            g.reindex()
            return True
    return False
