"""Pairing a model file's ops with the raw layers TVM made of them (convdiff.ir.names).

Pure logic on op lists: the real files' op lists are read in the localize and repair tests,
which name every injected fault's layer as its file does."""

from __future__ import annotations

import numpy as np

from convdiff.ir.graph import CanonicalGraph, Layer
from convdiff.ir.names import FileOp, _kind, keras_names, pair_ops


def _conv(name: str, index: int, size: int | None) -> FileOp:
    return FileOp("conv2d", name, index, size)


def test_ops_pair_in_order_when_the_weight_sizes_agree() -> None:
    ops = [_conv("a", 0, 27), _conv("b", 3, 72)]
    assert pair_ops(ops, [("L1", 27), ("L2", 72)]) == [("L1", ops[0]), ("L2", ops[1])]


def test_two_branches_emitted_in_another_order_keep_their_own_names() -> None:
    # the file lists branch a (3x3x3x4 = 108 weights) before branch b (1x1x3x8 = 24);
    # TVM emitted b first, and the second 108 after both
    ops = [_conv("branch_a", 0, 108), _conv("branch_b", 1, 24), _conv("head", 2, 108)]
    pairs = pair_ops(ops, [("L_b", 24), ("L_a", 108), ("L_head", 108)])
    assert [(lid, op.name) for lid, op in pairs] == [
        ("L_b", "branch_b"),
        ("L_a", "branch_a"),
        ("L_head", "head"),
    ]


def test_sizes_that_cannot_be_paired_give_no_names() -> None:
    ops = [_conv("a", 0, 27), _conv("b", 1, 72)]
    assert pair_ops(ops, [("L1", 27), ("L2", 64)]) == []
    assert pair_ops(ops, [("L1", 27)]) == []  # counts differ


def test_a_side_without_sizes_pairs_in_order() -> None:
    # torch.export programs' ops carry no sizes; a layer without weights neither
    ops = [_conv("a", 0, None), _conv("b", 1, None)]
    assert pair_ops(ops, [("L1", 72), ("L2", 27)]) == [("L1", ops[0]), ("L2", ops[1])]
    sized = [_conv("a", 0, 27), _conv("b", 1, 72)]
    assert pair_ops(sized, [("L1", None), ("L2", 27)]) == [("L1", sized[0]), ("L2", sized[1])]


def test_keras_names_map_conversion_ops_onto_layers() -> None:
    classes = {
        "image": "InputLayer",
        "conv": "Conv2D",
        "conv_1": "Conv2D",
        "bn": "BatchNormalization",
    }
    classes |= {"relu": "ReLU", "dense": "Dense", "softmax": "Softmax"}
    ops = [
        FileOp(*op)
        for op in (
            # TFLite fuses BN and ReLU into the conv: the op's name holds all three scopes
            ("conv2d", "m_1/relu_1/Relu;m_1/bn_1/batchnorm/add_1;m_1/conv_1/convolution", 0),
            # the second conv, "conv_1", under TF's "_1" suffix: its scope is conv_1_1
            ("conv2d", "m_1/conv_1_1/convolution;m_1/conv_1_1/BiasAdd", 1),
            ("dense", "m_1/dense_1/MatMul;m_1/dense_1/BiasAdd", 2),
            ("softmax", "StatefulPartitionedCall_1:0", 3),
            ("relu", "StatefulPartitionedCall/m_1/relu_1/Relu", 4),
        )
    ]
    assert keras_names(ops, classes) == {
        ops[0][1]: "conv",
        ops[1][1]: "conv_1",
        ops[2][1]: "dense",
        ops[4][1]: "relu",
    }


def test_a_bias_add_is_its_conv_and_other_adds_and_muls_are_the_files_own() -> None:
    """TVM writes a TFLite conv's bias as an add of a constant after the conv: not an op of the
    file. A full-integer file's own ADD and MUL ops (a residual add, a rescaling by a constant)
    are named, so each gets its precision finding."""
    one = np.ones(4, dtype=np.float32)
    raw = CanonicalGraph(
        [
            Layer("x", "input"),
            Layer("scale", "mul", ["x"], params={"const": one}),  # the file's MUL
            Layer("conv", "conv2d", ["scale"], params={"weight": np.ones((4, 4, 1, 1))}),
            Layer("bias", "add", ["conv"], params={"const": one}),  # the conv's bias
            Layer("residual", "add", ["bias", "scale"]),  # the file's ADD
            Layer("shift", "add", ["residual"], params={"const": one}),  # the file's ADD
        ],
        inputs=["x"],
        outputs=["shift"],
    )
    assert [_kind(raw, layer) for layer in raw.layers] == [
        "input",
        "mul",
        "conv2d",
        "",
        "add",
        "add",
    ]
