"""Tiny ONNX models of the patterns real models showed the localizer: ops whose settings
TVM's ONNX frontend hides (Pad as a TE kernel, Resize's attributes) and more BatchNorms than
canonicalization once folded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import helper

from tests.tiny.onnx_models import save_graph


def tiny_resize(
    path: Path,
    coordinate_mode: str = "half_pixel",
    mode: str = "linear",
    size: int = 8,
    seed: int = 0,
) -> Path:
    """NCHW (1,3,size,size) -> Conv 3x3 -> Resize x2 (``mode``, ``coordinate_mode``) -> Conv
    3x3 -> GlobalAveragePool -> Flatten -> Gemm: one Resize node named ``upsample``."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "w2": rng.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32),
        "scales": np.array([1, 1, 2, 2], dtype=np.float32),
        "fc": rng.normal(0, 1, (5, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node(
            "Resize",
            ["c1", "", "scales"],
            ["up"],
            mode=mode,
            coordinate_transformation_mode=coordinate_mode,
            name="upsample",
        ),
        helper.make_node("Conv", ["up", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["out"], transB=1, name="fc"),
    ]
    return save_graph(path, nodes, "tiny_resize", [1, 3, size, size], "out", [1, 5], weights)


def tiny_stride2_pad(
    path: Path, in_conv: bool = False, batch: int | str = "N", size: int = 8, seed: int = 0
) -> Path:
    """What tf2onnx writes for Keras' ZeroPadding2D(((0, 1), (0, 1))) before a stride-2 'valid'
    depthwise conv (MobileNetV2's downsampling blocks): Pad [0,0,0,0, 0,0,1,1] -> Conv
    stride 2, groups 3 -> GlobalAveragePool -> Flatten -> Gemm; the batch ``N`` dynamic.
    ``in_conv``: the same computation with the pads inside the Conv (as TFLite folds them)."""
    rng = np.random.default_rng(seed)
    weights = {
        "pads": np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64),
        "dw": rng.normal(0, 0.5, (3, 1, 3, 3)).astype(np.float32),
        "fc": rng.normal(0, 1, (5, 3)).astype(np.float32),
    }
    if in_conv:
        del weights["pads"]
        pads = {"pads": [0, 0, 1, 1]}
        nodes = [helper.make_node("Conv", ["input", "dw"], ["c"], strides=[2, 2], group=3, **pads)]
    else:
        nodes = [
            helper.make_node("Pad", ["input", "pads"], ["p"], mode="constant", name="pad"),
            helper.make_node("Conv", ["p", "dw"], ["c"], strides=[2, 2], group=3),
        ]
    nodes += [
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["out"], transB=1, name="fc"),
    ]
    shape = [batch, 3, size, size]
    return save_graph(path, nodes, "tiny_stride2_pad", shape, "out", [batch, 5], weights)


def tiny_deep_bn(path: Path, depth: int = 60, folded: bool = False, seed: int = 0) -> Path:
    """NCHW (1,2,4,4) -> ``depth`` x (Conv 1x1 -> BatchNormalization -> Relu) -> Gemm: more
    BatchNorms than the canonicalizer once had rounds (50), as in MobileNetV2 (52),
    InceptionV3 (94) and ResNet101 (104). ``folded``: each BatchNorm folded into its Conv's
    weight and bias in float64, as torch's ONNX exporter writes it."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    nodes, x = [], "input"
    for i in range(depth):
        w = rng.normal(0, 0.7, (2, 2, 1, 1))
        gamma, beta = rng.uniform(0.5, 1.5, 2), rng.normal(0, 0.3, 2)
        mean, var = rng.normal(0, 0.3, 2), rng.uniform(0.5, 2.0, 2)
        if folded:
            scale = gamma / np.sqrt(var + 1e-5)
            weights[f"w{i}"] = (w * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
            weights[f"b{i}"] = (beta - mean * scale).astype(np.float32)
            nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"]))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        else:
            bn = {"g": gamma, "be": beta, "m": mean, "v": var}
            weights[f"w{i}"] = w.astype(np.float32)
            weights.update({f"{k}{i}": v.astype(np.float32) for k, v in bn.items()})
            nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"]))
            inputs = [f"c{i}", f"g{i}", f"be{i}", f"m{i}", f"v{i}"]
            nodes.append(helper.make_node("BatchNormalization", inputs, [f"n{i}"], epsilon=1e-5))
            nodes.append(helper.make_node("Relu", [f"n{i}"], [f"r{i}"]))
        x = f"r{i}"
    weights["fc"] = rng.normal(0, 1, (3, 32)).astype(np.float32)
    nodes.append(helper.make_node("Flatten", [x], ["f"], axis=1))
    nodes.append(helper.make_node("Gemm", ["f", "fc"], ["out"], transB=1))
    return save_graph(path, nodes, "tiny_deep_bn", [1, 2, 4, 4], "out", [1, 3], weights)


def tiny_nested_concat(path: Path, nested: bool = True, seed: int = 0) -> Path:
    """NCHW (1,3,6,6) -> four Conv 1x1 branches of 1..4 channels -> Concat(b0, Concat(b1, b2),
    b3) (as Keras' InceptionV3 mixed9/mixed10 and TFLite have it) or, ``nested=False``, one
    Concat of the four (as tf2onnx merges them) -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    weights = {f"w{i}": rng.normal(0, 0.5, (i + 1, 3, 1, 1)).astype(np.float32) for i in range(4)}
    weights["fc"] = rng.normal(0, 1, (3, 10)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", f"w{i}"], [f"b{i}"]) for i in range(4)]
    if nested:
        nodes.append(helper.make_node("Concat", ["b1", "b2"], ["inner"], axis=1))
        nodes.append(helper.make_node("Concat", ["b0", "inner", "b3"], ["cat"], axis=1))
    else:
        nodes.append(helper.make_node("Concat", ["b0", "b1", "b2", "b3"], ["cat"], axis=1))
    nodes += [
        helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["out"], transB=1),
    ]
    return save_graph(path, nodes, "tiny_nested_concat", [1, 3, 6, 6], "out", [1, 3], weights)


def tiny_nhwc_pad_first(path: Path, pad_first: bool = True, seed: int = 0) -> Path:
    """NHWC (1,8,8,3) input padded by 3 for a 7x7 stride-2 Conv, as Keras' ResNet101 starts
    (ZeroPadding2D, then conv1): ``pad_first`` pads the NHWC input itself, as TFLite's PAD
    does, then Transposes to NCHW; else Transpose, then the Conv pads by itself, as tf2onnx
    writes it. -> Conv -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    weights = {
        "w": rng.normal(0, 0.3, (4, 3, 7, 7)).astype(np.float32),
        "fc": rng.normal(0, 1, (3, 4)).astype(np.float32),
    }
    if pad_first:
        weights["pads"] = np.array([0, 3, 3, 0, 0, 3, 3, 0], dtype=np.int64)
        nodes = [
            helper.make_node("Pad", ["input", "pads"], ["p"]),
            helper.make_node("Transpose", ["p"], ["t"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["t", "w"], ["c"], strides=[2, 2]),
        ]
    else:
        nodes = [
            helper.make_node("Transpose", ["input"], ["t"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["t", "w"], ["c"], strides=[2, 2], pads=[3, 3, 3, 3]),
        ]
    nodes += [
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["out"], transB=1),
    ]
    return save_graph(path, nodes, "tiny_nhwc_pad_first", [1, 8, 8, 3], "out", [1, 3], weights)


def tiny_channel_gather(path: Path, seed: int = 0) -> Path:
    """NCHW (N,3,8,8), batch dynamic -> per channel c: Gather(x, c, axis=1) -> Unsqueeze -> Mul
    -> Concat -> Conv 3x3 -> GlobalAveragePool -> Flatten -> Gemm: torchvision InceptionV3's
    ``transform_input`` as torch's dynamo exporter writes it."""
    rng = np.random.default_rng(seed)
    weights = {
        "w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "fc": rng.normal(0, 1, (3, 4)).astype(np.float32),
        "axes": np.array([1], dtype=np.int64),
    }
    nodes = []
    for c in range(3):
        weights[f"c{c}"] = np.array(c, dtype=np.int64)
        weights[f"s{c}"] = np.array(0.4 + 0.05 * c, dtype=np.float32)
        nodes += [
            helper.make_node("Gather", ["input", f"c{c}"], [f"g{c}"], axis=1),
            helper.make_node("Unsqueeze", [f"g{c}", "axes"], [f"u{c}"]),
            helper.make_node("Mul", [f"u{c}", f"s{c}"], [f"m{c}"]),
        ]
    nodes += [
        helper.make_node("Concat", ["m0", "m1", "m2"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["out"], transB=1),
    ]
    shape = ["N", 3, 8, 8]
    return save_graph(path, nodes, "tiny_channel_gather", shape, "out", ["N", 3], weights)
