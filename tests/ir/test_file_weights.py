"""Weight tensors read from model files (no worker): layouts the files state, layouts matched
by content, and the one-layer-per-tensor graph the weights stage compares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from convdiff.ir import file_weights
from convdiff.ir.align import align
from convdiff.stages import StageContext, weights
from tests.tiny.onnx_models import save_graph

RNG = np.random.default_rng(0)


def _dense_model(path: Path, w_matmul: np.ndarray, w_gemm: np.ndarray, trans_b: int) -> Path:
    """input [1, 8] -> MatMul (w [8, 6]) -> Gemm (B [6, 4], or [4, 6] with transB)."""
    nodes = [
        helper.make_node("MatMul", ["input", "wm"], ["h"], "mm"),
        helper.make_node("Gemm", ["h", "wg"], ["y"], "gemm", transB=trans_b),
    ]
    weights_ = {"wm": w_matmul, "wg": w_gemm, "shape": np.array([1, 4], np.int64)}
    return save_graph(path, nodes, "dense", [1, 8], "y", [1, 4], weights_)


def test_onnx_dense_weights_become_out_in_and_integers_are_left_out(tmp_path: Path) -> None:
    wm = RNG.normal(size=(8, 6)).astype(np.float32)
    wg = RNG.normal(size=(6, 4)).astype(np.float32)
    plain = file_weights.onnx_tensors(_dense_model(tmp_path / "a.onnx", wm, wg, 0))
    trans = file_weights.onnx_tensors(_dense_model(tmp_path / "b.onnx", wm, wg.T.copy(), 1))
    assert [(n, v.shape) for n, v in plain] == [("wm", (6, 8)), ("wg", (4, 6))]
    assert np.array_equal(plain[0][1], wm.T) and np.array_equal(plain[1][1], wg.T)
    assert np.array_equal(trans[1][1], plain[1][1])


def test_the_graph_chains_one_layer_per_tensor_in_file_order() -> None:
    tensors = [
        ("conv/w", np.ones((4, 3, 3, 3), np.float32)),
        ("fc/w", np.ones((2, 4), np.float32)),
        ("fc/b", np.ones(2, np.float32)),
        ("fc/b", np.zeros(2, np.float32)),
    ]
    g = file_weights.graph_of(tensors, "onnx", "m.onnx")
    assert [(lay.id, lay.op, lay.inputs) for lay in g.layers] == [
        ("(file)", "input", []),
        ("conv/w", "conv2d", ["(file)"]),
        ("fc/w", "dense", ["conv/w"]),
        ("fc/b", "other", ["fc/w"]),
        ("fc/b#3", "other", ["fc/b"]),
    ]
    assert g.inputs == ["(file)"] and g.outputs == ["fc/b#3"]


def test_keras_kernels_become_oihw_and_out_in() -> None:
    conv = RNG.normal(size=(3, 3, 2, 5)).astype(np.float32)  # HWIO
    depthwise = RNG.normal(size=(3, 3, 4, 2)).astype(np.float32)  # H, W, C, multiplier
    dense = RNG.normal(size=(5, 7)).astype(np.float32)  # in, out
    bias = np.ones(5, np.float32)
    out = dict(
        file_weights.keras_layouts(
            [
                ("c/kernel", conv),
                ("d/depthwise_kernel", depthwise),
                ("f/kernel", dense),
                ("c/bias", bias),
            ]
        )
    )
    assert np.array_equal(out["c/kernel"], conv.transpose(3, 2, 0, 1))
    assert out["d/depthwise_kernel"].shape == (8, 1, 3, 3)
    # output channel c*m + k is input channel c's k-th filter
    assert np.array_equal(out["d/depthwise_kernel"][3, 0], depthwise[:, :, 1, 1])
    assert np.array_equal(out["f/kernel"], dense.T) and np.array_equal(out["c/bias"], bias)


def test_a_layout_the_file_does_not_state_is_matched_by_content() -> None:
    """B stores A's 8x3x3x3 conv weight as HWIO and doubled: transposed back to OIHW, the
    weights stage names the scale (not a layout or shape change)."""
    w = RNG.normal(size=(8, 3, 3, 3)).astype(np.float32)
    a = file_weights.graph_of([("w", w)], "onnx", "a.onnx")
    b = file_weights.graph_of([("k", (w * 2).transpose(2, 3, 1, 0).copy())], "tflite", "b")
    alignment = align(a, b)
    assert file_weights.match_layouts(a, b, alignment.anchors) == ["k axes [3, 2, 0, 1]"]
    found = weights.run(StageContext(a, b, alignment))
    assert [(f.kind, f.source_layer, f.target_layer, f.summary) for f in found] == [
        ("scale", "w", "k", "conv2d weight: the source's times 2")
    ]


def test_onnx_constant_nodes_count_as_tensors(tmp_path: Path) -> None:
    w = RNG.normal(size=(4, 8)).astype(np.float32)
    const = helper.make_node(
        "Constant", [], ["wc"], "c", value=onnx.numpy_helper.from_array(w, "wc")
    )
    gemm = helper.make_node("Gemm", ["input", "wc"], ["y"], "gemm", transB=1)
    path = save_graph(tmp_path / "c.onnx", [const, gemm], "c", [1, 8], "y", [1, 4], {})
    [(name, value)] = file_weights.onnx_tensors(path)
    assert name == "wc" and np.array_equal(value, w)


def test_a_name_that_is_no_utf8_becomes_text() -> None:
    """A damaged ONNX file's initializer name reaches us as bytes (the fuzz test found one):
    the layer id is text, so the report stays JSON."""
    weight = np.ones((2, 2), np.float32)
    graph = file_weights.graph_of([(b"\x80onv_w", weight), ("fc", weight)], "onnx", "m.onnx")
    assert [lay.id for lay in graph.layers[1:]] == ["\ufffdonv_w", "fc"]
