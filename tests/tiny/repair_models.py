"""Tiny ONNX graphs for the patch appliers' corner cases (written in the test process with
onnx.helper): a weight shared by two nodes, a weight produced by DequantizeLinear, removable
single-input nodes, a pre-opset-11 Clip, a MatMul + Add dense layer, an auto_pad conv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import helper

from tests.tiny.onnx_models import save_graph


def shared_weight(path: Path, seed: int = 0) -> Path:
    """input (1,3,8,8) -> convA(w) -> convB(w, the same initializer) -> output."""
    rng = np.random.default_rng(seed)
    weights = {"w": rng.normal(0, 0.5, (3, 3, 3, 3)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["a"], "convA", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w"], ["out"], "convB", pads=[1, 1, 1, 1]),
    ]
    return save_graph(path, nodes, "shared", [1, 3, 8, 8], "out", [1, 3, 8, 8], weights)


def dequantized_weight(path: Path, seed: int = 0) -> Path:
    """input (1,3,8,8) -> DequantizeLinear(int8 per-channel) weight -> conv (SAME_UPPER) ->
    ident (Identity) -> relu -> drop (Dropout, the graph's output)."""
    rng = np.random.default_rng(seed)
    weights = {
        "wq": rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8),
        "scale": np.array([0.01, 0.02, 0.03, 0.04], np.float32),
        "zero": np.zeros(4, np.int8),
        "b": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["w"], "dq", axis=0),
        helper.make_node("Conv", ["input", "w", "b"], ["c"], "conv", auto_pad="SAME_UPPER"),
        helper.make_node("Identity", ["c"], ["i"], "ident"),
        helper.make_node("Relu", ["i"], ["r"], "relu"),
        helper.make_node("Dropout", ["r"], ["out"], "drop"),
    ]
    return save_graph(path, nodes, "dq", [1, 3, 8, 8], "out", [1, 4, 8, 8], weights)


def clip_opset10(path: Path) -> Path:
    """input (1,3,4,4) -> Clip(min 0, max 5 as attributes: opset 10) -> output."""
    nodes = [helper.make_node("Clip", ["input"], ["out"], "clip", min=0.0, max=5.0)]
    return save_graph(path, nodes, "clip10", [1, 3, 4, 4], "out", [1, 3, 4, 4], {}, opset=10)


def matmul_add(path: Path, seed: int = 0) -> Path:
    """input (1,3,2,2) -> Flatten -> dense (MatMul by W (12,5)) -> Add(bias) -> output."""
    rng = np.random.default_rng(seed)
    weights = {
        "W": rng.normal(0, 0.5, (12, 5)).astype(np.float32),
        "bias": rng.normal(0, 0.1, 5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Flatten", ["input"], ["f"], "flatten"),
        helper.make_node("MatMul", ["f", "W"], ["m"], "dense"),
        helper.make_node("Add", ["m", "bias"], ["out"], "dense_bias"),
    ]
    return save_graph(path, nodes, "matmul", [1, 3, 2, 2], "out", [1, 5], weights)
