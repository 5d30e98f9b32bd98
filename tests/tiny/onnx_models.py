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


def runtime_pads_cnn(
    path: Path, size: int | str = 8, mode: str = "edge", classes: int = 5, seed: int = 0
) -> Path:
    """NCHW (batch,3,size,size) -> Conv 3x3 -> Pad -> MaxPool 3x3 stride 2 -> Flatten -> Gemm,
    the Pad's widths computed at run time as a legacy torch export of TF "SAME" padding
    computes them (open_nsfw's edge Pad): Shape -> Gather -> integer arithmetic -> Concat
    [W before, W after, H before, H after] and four zeros -> Reshape(-1, 2) -> Slice(reverse)
    -> Transpose -> Reshape(-1) -> Cast. At size 8 they are [0, 0, 0, 0, 0, 0, 1, 1]: one
    row and one column at the bottom/right only. ``size`` may be symbolic (a str)."""
    rng = np.random.default_rng(seed)
    flat = 4 * 4 * 4 if isinstance(size, int) else 0
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    weights = {
        "conv_w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "fc_w": rng.normal(0, 0.5, (classes, flat or 4)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, (classes,)).astype(np.float32),
        "h_axis": np.int64(2), "w_axis": np.int64(3), "one": np.int64(1), "two": np.int64(2),
        "three": np.int64(3),
        "zero_1d": i64(0), "four": i64(4), "pairs": i64(-1, 2), "flat": i64(-1),
        "rev_start": i64(-1), "rev_end": i64(-(2**63) + 1), "rev_axis": i64(0),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["shape"]),
    ]
    halves = []
    for dim in ("w", "h"):  # torch's F.pad order: the last dimension first
        nodes += [
            helper.make_node("Gather", ["shape", f"{dim}_axis"], [f"{dim}"], axis=0),
            # total = ((size + 2 - 1) / 2 - 1) * 2 + 3 - size; before = total / 2
            helper.make_node("Add", [dim, "one"], [f"{dim}_a"]),
            helper.make_node("Div", [f"{dim}_a", "two"], [f"{dim}_out"]),
            helper.make_node("Sub", [f"{dim}_out", "one"], [f"{dim}_b"]),
            helper.make_node("Mul", [f"{dim}_b", "two"], [f"{dim}_c"]),
            helper.make_node("Add", [f"{dim}_c", "three"], [f"{dim}_d"]),
            helper.make_node("Sub", [f"{dim}_d", dim], [f"{dim}_total"]),
            helper.make_node("Div", [f"{dim}_total", "two"], [f"{dim}_before"]),
            helper.make_node("Sub", [f"{dim}_total", f"{dim}_before"], [f"{dim}_after"]),
            helper.make_node("Unsqueeze", [f"{dim}_before", "zero_1d"], [f"{dim}_before_1"]),
            helper.make_node("Unsqueeze", [f"{dim}_after", "zero_1d"], [f"{dim}_after_1"]),
        ]
        halves += [f"{dim}_before_1", f"{dim}_after_1"]
    nodes += [
        helper.make_node("Concat", halves, ["spatial"], axis=0),
        helper.make_node("ConstantOfShape", ["four"], ["zeros"], value=_int64_zero()),
        helper.make_node("Concat", ["spatial", "zeros"], ["torch_pads"], axis=0),
        helper.make_node("Reshape", ["torch_pads", "pairs"], ["pair_rows"]),
        helper.make_node(
            "Slice", ["pair_rows", "rev_start", "rev_end", "rev_axis", "flat"], ["reversed"]
        ),
        helper.make_node("Transpose", ["reversed"], ["by_side"], perm=[1, 0]),
        helper.make_node("Reshape", ["by_side", "flat"], ["onnx_pads"]),
        helper.make_node("Cast", ["onnx_pads"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Pad", ["c", "pads"], ["padded"], mode=mode, name="pad"),
        helper.make_node("MaxPool", ["padded"], ["pooled"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Flatten", ["pooled"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    shape: list[int | str] = ["batch", 3, size, size]
    if not flat:  # a symbolic size: a global pool before the dense layer instead
        nodes[-2:-1] = [
            helper.make_node("GlobalMaxPool", ["pooled"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"], axis=1),
        ]
    return save_graph(path, nodes, "runtime_pads", shape, "logits", ["batch", classes], weights)


def _int64_zero() -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(1, dtype=np.int64), "zero")
