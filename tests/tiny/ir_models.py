"""Tiny models for the canonical-graph tests, written with onnx.helper in the test process.

``tiny_rich_cnn`` has every layer kind whose conversion the canonicalizer must see through:
a convolution with bias, BatchNorm (to be folded), ReLU6 as ``Clip(0, 6)``, max and average
pooling, and a Flatten of a 3x3 feature map into a Dense layer (so the NCHW/NHWC flatten order
matters), ending in Softmax.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import helper

from tests.tiny.onnx_models import save_graph

SIZE = 12
CLASSES = 5


def tiny_rich_cnn(path: Path, seed: int = 0) -> Path:
    """NCHW (1,3,12,12) -> Conv3x3+BN+Clip(0,6) -> MaxPool2 -> Conv3x3+Relu -> AvgPool2 ->
    Flatten(8*3*3) -> Gemm(5) -> Softmax, in the shape a torch export has (opset 13)."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.normal(0, 0.5, (8, 3, 3, 3)),
        "b1": rng.normal(0, 0.1, (8,)),
        "gamma": rng.uniform(0.5, 1.5, (8,)),
        "beta": rng.normal(0, 0.5, (8,)),
        "mean": rng.normal(0, 0.3, (8,)),
        "var": rng.uniform(0.5, 2.0, (8,)),
        "w2": rng.normal(0, 0.3, (8, 8, 3, 3)),
        "b2": rng.normal(0, 0.1, (8,)),
        "fc_w": rng.normal(0, 0.5, (CLASSES, 8 * 3 * 3)),
        "fc_b": rng.normal(0, 0.1, (CLASSES,)),
        "lo": np.array(0.0),
        "hi": np.array(6.0),
    }
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-3
        ),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"]),
        helper.make_node("MaxPool", ["r6"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["mp", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["ap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    return save_graph(
        path, nodes, "tiny_rich_cnn", [1, 3, SIZE, SIZE], "probs", [1, CLASSES], weights
    )
