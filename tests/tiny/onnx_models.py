"""Tiny ONNX classifiers written with onnx.helper: no framework needed, so the test process
itself can make them (onnx is only the protobuf library)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save_graph(
    path: Path | str,
    nodes: list[onnx.NodeProto],
    name: str,
    input_shape: list[int | str],
    output: str,
    output_shape: list[int | str],
    weights: dict[str, np.ndarray],
    opset: int = 13,
) -> Path:
    """Write a checked ONNX model with one float ``input`` and one float output: the one
    place where the tiny test models are assembled and saved."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return Path(path)


def tiny_classifier(path: Path, size: int = 16, classes: int = 10, seed: int = 0) -> Path:
    """NCHW (1,3,size,size) -> Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax.

    Small enough to write in the test process, real enough for every converter."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv_w": rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "fc_w": rng.normal(0, 1.0, (classes, 8)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, (classes,)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    return save_graph(path, nodes, "tiny", [1, 3, size, size], "probs", [1, classes], weights)


def opset18_reduce_mean(path: Path, size: int = 8, seed: int = 0) -> Path:
    """NCHW input -> Conv -> ReduceMean(axes as an input, opset 18) -> MatMul: a graph that
    onnx2torch 1.5.15 cannot convert (no ReduceMean-18 converter), for a real converter crash."""
    rng = np.random.default_rng(seed)
    weights = {
        "w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "axes": np.array([2, 3], dtype=np.int64),
        "fc": rng.normal(0, 1, (4, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "fc"], ["out"]),
    ]
    return save_graph(path, nodes, "opset18", [1, 3, size, size], "out", [1, 5], weights, opset=18)
