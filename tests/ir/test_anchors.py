"""Anchors: layers that own parameters, paired by their weights (pure numpy, no worker).

Hand-made canonical graphs: a chain of dense layers of ONE shape drawn from one initializer (a
transformer's blocks look like this to any shape-based pairing), then the target changed as
converters change weights -- per-row scales, int8 rounding, a transposed or zeroed copy.
"""

from __future__ import annotations

import numpy as np

from convdiff.ir.align import align
from convdiff.ir.anchors import Anchor, pair_anchors, same_tensor
from convdiff.ir.graph import CanonicalGraph, Layer

WIDTH = 16


def _chain(weights: list[np.ndarray], norms: int = 0) -> CanonicalGraph:
    """input -> dense d0 -> relu -> dense d1 -> relu ... ; ``norms`` LayerNorm-like ``other``
    layers (scale 1, shift 0, as initialized) after the first dense layers."""
    layers = [Layer("x", "input", shape=[-1, WIDTH])]
    prev = "x"
    for i, w in enumerate(weights):
        layers.append(Layer(f"d{i}", "dense", [prev], {"units": WIDTH}, [-1, WIDTH], {"weight": w}))
        prev = f"d{i}"
        if i < norms:
            ones = np.ones(WIDTH, np.float32)
            params = {"arg1": ones, "arg2": np.zeros(WIDTH, np.float32)}
            attrs = {"tvm_op": "relax.nn.layer_norm"}
            layers.append(Layer(f"n{i}", "other", [prev], attrs, [-1, WIDTH], params))
            prev = f"n{i}"
        layers.append(Layer(f"r{i}", "relu", [prev], shape=[-1, WIDTH]))
        prev = f"r{i}"
    return CanonicalGraph(layers, ["x"], [prev])


def _weights(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.02, (WIDTH, WIDTH)).astype(np.float32) for _ in range(count)]


def _int8(w: np.ndarray) -> np.ndarray:
    step = np.abs(w).max() / 127
    return (np.round(w / step) * step).astype(np.float32)


def test_same_shape_layers_pair_by_content_across_scales_and_int8() -> None:
    weights = _weights(6)
    scales = np.linspace(0.5, 2.0, WIDTH, dtype=np.float32)[:, None]  # a folded BatchNorm
    target = [weights[0] * scales, _int8(weights[1]), *weights[2:]]
    anchors = pair_anchors(_chain(weights), _chain(target))
    assert anchors == [Anchor(f"d{i}", f"d{i}", "content") for i in range(6)]


def test_content_wins_over_order_when_the_target_lists_branches_otherwise() -> None:
    weights = _weights(4)
    swapped = [weights[0], weights[2], weights[1], weights[3]]
    anchors = pair_anchors(_chain(weights), _chain(swapped))
    assert [(x.a, x.b) for x in anchors] == [("d0", "d0"), ("d1", "d2"), ("d2", "d1"), ("d3", "d3")]


def test_a_weight_content_cannot_place_is_placed_by_dataflow_order() -> None:
    weights = _weights(5)
    target = list(weights)
    target[1] = np.zeros_like(weights[1])  # zeroed
    target[3] = np.ascontiguousarray(weights[3].T)  # stored transposed (square)
    anchors = pair_anchors(_chain(weights), _chain(target))
    assert anchors == [
        Anchor("d0", "d0", "content"),
        Anchor("d1", "d1", "order"),
        Anchor("d2", "d2", "content"),
        Anchor("d3", "d3", "order"),
        Anchor("d4", "d4", "content"),
    ]


def test_identical_norm_parameters_pair_in_order() -> None:
    """Three LayerNorms with scale 1 and shift 0 each match all three: the dense anchors
    around them place each one (its content matches, so ``how`` stays ``content``)."""
    weights = _weights(4)
    anchors = pair_anchors(_chain(weights, norms=3), _chain(weights, norms=3))
    norms = [(x.a, x.b, x.how) for x in anchors if x.a.startswith("n")]
    assert norms == [("n0", "n0", "content"), ("n1", "n1", "content"), ("n2", "n2", "content")]


def test_a_weight_of_another_size_is_not_an_anchor_of_it() -> None:
    weights = _weights(3)
    target = list(weights)
    target[1] = np.zeros((WIDTH, WIDTH // 2), np.float32)
    anchors = pair_anchors(_chain(weights), _chain(target))
    assert [(x.a, x.b) for x in anchors] == [("d0", "d0"), ("d2", "d2")]


def test_same_tensor_sees_layouts_but_not_another_draw() -> None:
    w = _weights(2)
    conv = np.random.default_rng(1).normal(size=(8, 4, 3, 3))
    assert same_tensor(w[0], w[0].T.T * 3.0)
    assert same_tensor(conv, conv.transpose(0, 2, 3, 1))  # OHWI: the same values, reordered
    assert not same_tensor(w[0], w[1])
    assert not same_tensor(w[0], np.zeros_like(w[0]))


def test_alignment_places_anchors_first_and_reports_them() -> None:
    weights = _weights(3)
    alignment = align(_chain(weights), _chain(weights))
    assert [(x.a, x.b) for x in alignment.anchors] == [("d0", "d0"), ("d1", "d1"), ("d2", "d2")]
    assert not alignment.unmatched
    assert alignment.to_json()["anchors"][0] == {"a": "d0", "b": "d0", "how": "content"}
