"""Fault injection: a tiny ONNX classifier and one edit per conversion fault class.

:func:`fault_base` writes the model every fault starts from; :func:`inject` copies it with one
fault edited in with onnx.helper / numpy_helper (no framework: the test process runs this).
:data:`FAULTS` maps each fault to what convdiff must name: ``(stage, kind, source_layer,
target_layer)`` -- the ONNX node names, since both files are ONNX.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.tiny.onnx_models import save_graph

SIZE = 16
CLASSES = 10


def fault_base(path: Path, seed: int = 0) -> Path:
    """NCHW (1,3,16,16) -> conv1 3x3/2 pads 1 + bn1 + relu6 (Clip 0..6) -> pool1 MaxPool 2/2
    -> conv2 3x3 pads 1 + relu2 -> avgpool 3x3/1 pads 1 (count_include_pad=0) -> gap ->
    flatten -> fc (Gemm, 10 classes) -> softmax. Every node is named."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.normal(0, 0.5, (8, 3, 3, 3)),
        "b1": rng.normal(0, 0.1, (8,)),
        "gamma": rng.uniform(0.5, 1.5, (8,)),
        "beta": rng.normal(0, 0.5, (8,)),
        "mean": rng.normal(0, 0.3, (8,)),
        "var": rng.uniform(0.001, 0.01, (8,)),  # small: the epsilon matters
        "w2": rng.normal(0, 0.3, (8, 8, 3, 3)),
        "b2": rng.normal(0, 0.1, (8,)),
        "fc_w": rng.normal(0, 0.5, (CLASSES, 8)),
        "fc_b": rng.normal(0, 0.1, (CLASSES,)),
        "lo": np.array(0.0),
        "hi": np.array(6.0),
    }
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    node = helper.make_node
    nodes = [
        node("Conv", ["input", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        node(
            "BatchNormalization",
            ["c1", "gamma", "beta", "mean", "var"],
            ["bn"],
            "bn1",
            epsilon=1e-3,
        ),
        node("Clip", ["bn", "lo", "hi"], ["r6"], "relu6"),
        node("MaxPool", ["r6"], ["mp"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["mp", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        node("Relu", ["c2"], ["r2"], "relu2"),
        node(
            "AveragePool",
            ["r2"],
            ["ap"],
            "avgpool",
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[1, 1, 1, 1],
            count_include_pad=0,
        ),
        node("GlobalAveragePool", ["ap"], ["g"], "gap"),
        node("Flatten", ["g"], ["flat"], "flatten", axis=1),
        node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], "fc", transB=1),
        node("Softmax", ["logits"], ["probs"], "softmax", axis=1),
    ]
    return save_graph(path, nodes, "fault_base", [1, 3, SIZE, SIZE], "probs", [1, CLASSES], weights)


# -- editing helpers -------------------------------------------------------------------------


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _set_attr(model: onnx.ModelProto, node: str, key: str, value: object) -> None:
    target = _node(model, node)
    for attr in target.attribute:
        if attr.name == key:
            target.attribute.remove(attr)
            break
    target.attribute.append(helper.make_attribute(key, value))


def _array(model: onnx.ModelProto, name: str) -> np.ndarray:
    init = next(i for i in model.graph.initializer if i.name == name)
    return numpy_helper.to_array(init).copy()


def _set_array(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))


def int8_grid(w: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric int8 quantize + dequantize (what TFLite dynamic range does)."""
    peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    step = (peak / 127.0).reshape((-1,) + (1,) * (w.ndim - 1))
    return (np.round(w / step) * step).astype(np.float32)


def _extra_class(model: onnx.ModelProto) -> None:
    w, b = _array(model, "fc_w"), _array(model, "fc_b")
    _set_array(model, "fc_w", np.concatenate([np.full((1, w.shape[1]), 0.05), w]))
    _set_array(model, "fc_b", np.concatenate([[0.0], b]))
    out = model.graph.output[0].type.tensor_type.shape.dim[1]
    out.dim_value = CLASSES + 1


def _zero_pad_before_max_pool(model: onnx.ModelProto) -> None:
    """An explicit Pad with value 0 before pool1 (a max pool pads with -inf): the pad a
    converter writes when it moves a MaxPool's padding out of the op."""
    index = next(i for i, n in enumerate(model.graph.node) if n.name == "pool1")
    model.graph.initializer.append(
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64), "pool_pads")
    )
    pad = helper.make_node("Pad", ["r6", "pool_pads"], ["r6_padded"], "pool1_pad", mode="constant")
    model.graph.node.insert(index, pad)
    model.graph.node[index + 1].input[0] = "r6_padded"


def _drop_bias(model: onnx.ModelProto) -> None:
    conv = _node(model, "conv2")
    del conv.input[2]


def _drop_activation(model: onnx.ModelProto) -> None:
    """relu2 left out: avgpool reads conv2's output (a converter that lost a fused ReLU)."""
    relu = _node(model, "relu2")
    _node(model, "avgpool").input[0] = relu.input[0]
    model.graph.node.remove(relu)


def _swap_activation_and_pool(model: onnx.ModelProto) -> None:
    """conv2 -> avgpool -> relu2 instead of conv2 -> relu2 -> avgpool (a converter that
    reordered ops it wrongly took for commuting)."""
    relu, pool = _node(model, "relu2"), _node(model, "avgpool")
    pool.input[0], pool.output[0] = "c2", "pooled"
    relu.input[0], relu.output[0] = "pooled", "ap"
    nodes = [n for n in model.graph.node if n.name != "relu2"]
    nodes.insert(nodes.index(pool) + 1, relu)
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]
    del model.graph.node[:]
    model.graph.node.extend(copies)


# a fault: (edit, (stage, kind, source_layer, target_layer) convdiff must report)
Fault = tuple[Callable[[onnx.ModelProto], None], tuple[str, str, str, str]]

FAULTS: dict[str, Fault] = {
    "lost_conv_pads": (
        lambda m: _set_attr(m, "conv2", "pads", [0, 0, 0, 0]),
        ("hyperparams", "lost_pads", "conv2", "conv2"),
    ),
    "asymmetric_same_pads": (
        lambda m: _set_attr(m, "conv1", "pads", [0, 0, 1, 1]),
        ("hyperparams", "asymmetric_pads", "conv1", "conv1"),
    ),
    "maxpool_pads": (
        lambda m: _set_attr(m, "pool1", "pads", [0, 0, 1, 1]),
        ("hyperparams", "asymmetric_pads", "pool1", "pool1"),
    ),
    "maxpool_ceil_mode": (
        lambda m: _set_attr(m, "pool1", "ceil_mode", 1),
        ("hyperparams", "ceil_mode", "pool1", "pool1"),
    ),
    "avgpool_count_include_pad": (
        lambda m: _set_attr(m, "avgpool", "count_include_pad", 1),
        ("hyperparams", "count_include_pad", "avgpool", "avgpool"),
    ),
    "avgpool_ceil_mode": (
        lambda m: _set_attr(m, "avgpool", "ceil_mode", 1),
        ("hyperparams", "ceil_mode", "avgpool", "avgpool"),
    ),
    "bn_epsilon": (
        lambda m: _set_attr(m, "bn1", "epsilon", 1e-5),
        ("hyperparams", "epsilon", "bn1", "bn1"),
    ),
    "relu6_bounds": (
        lambda m: _set_array(m, "hi", np.array(5.0)),
        ("hyperparams", "clip_bounds", "relu6", "relu6"),
    ),
    "weights_int8": (
        lambda m: _set_array(m, "w2", int8_grid(_array(m, "w2"))),
        ("weights", "precision", "conv2", "conv2"),
    ),
    "weights_float16": (
        lambda m: _set_array(m, "fc_w", _array(m, "fc_w").astype(np.float16)),
        ("weights", "precision", "fc", "fc"),
    ),
    "transposed_weights": (
        lambda m: _set_array(m, "w2", _array(m, "w2").transpose(0, 1, 3, 2)),
        ("weights", "transposed", "conv2", "conv2"),
    ),
    "zeroed_bias": (
        lambda m: _set_array(m, "b2", np.zeros(8)),
        ("weights", "zeroed", "conv2", "conv2"),
    ),
    "dropped_bias": (_drop_bias, ("weights", "dropped", "conv2", "conv2")),
    "scaled_weights": (
        lambda m: _set_array(m, "fc_w", _array(m, "fc_w") * 2.0),
        ("weights", "scale", "fc", "fc"),
    ),
    "extra_class": (_extra_class, ("weights", "extra_class", "fc", "fc")),
    "softmax_axis": (
        lambda m: _set_attr(m, "softmax", "axis", 0),
        ("hyperparams", "axis", "softmax", "softmax"),
    ),
    "maxpool_zero_pad": (_zero_pad_before_max_pool, ("graph", "extra_layer", None, "pool1_pad")),
    "dropped_activation": (_drop_activation, ("graph", "missing_layer", "relu2", None)),
    "swapped_layers": (
        _swap_activation_and_pool,
        ("graph", "reordered", "avgpool", "avgpool"),
    ),
}


def inject(base: Path, fault: str, out: Path) -> Path:
    """Write ``base`` with ``fault`` edited in (a checked, loadable ONNX model)."""
    model = onnx.load(base)
    FAULTS[fault][0](model)
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return out


__all__ = ["FAULTS", "fault_base", "inject", "int8_grid"]
