"""Canonical graph, canonicalization passes and alignment on hand-made graphs (no framework)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convdiff.ir.align import align
from convdiff.ir.canonicalize import canonicalize
from convdiff.ir.graph import CanonicalGraph, Layer

RNG = np.random.default_rng(0)
W = RNG.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
B = RNG.normal(0, 0.1, 4).astype(np.float32)
BN = {k: RNG.uniform(0.5, 1.5, 4).astype(np.float32) for k in ("gamma", "beta", "mean", "var")}
CONV = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "kernel": [3, 3]}


def _raw() -> CanonicalGraph:
    """pad -> conv -> add(bias) -> batch_norm -> maximum(0) -> minimum(6) -> GAP -> reshape."""
    layers = [
        Layer("x", "input", shape=[1, 3, 8, 8]),
        Layer("t", "identity", ["x"], {"tvm_op": "permute_dims"}, [1, 3, 8, 8]),
        Layer(
            "p",
            "pad",
            ["t"],
            {
                "pads": [1, 1, 1, 1],
                "value": 0.0,
                "mode": "constant",
                "spatial_only": True,
                "pad_width": [[0, 0], [0, 0], [1, 1], [1, 1]],
            },
            [1, 3, 10, 10],
        ),
        Layer("c", "conv2d", ["p"], dict(CONV), [1, 4, 8, 8], {"weight": W}),
        Layer("a", "add", ["c"], {}, [1, 4, 8, 8], {"const": B.reshape(1, 4, 1, 1)}),
        Layer("bn", "batch_norm", ["a"], {"epsilon": 1e-3, "axis": 1}, [1, 4, 8, 8], dict(BN)),
        Layer("mx", "maximum", ["bn"], {}, [1, 4, 8, 8], {"const": np.zeros((1, 1, 1, 1))}),
        Layer("mn", "minimum", ["mx"], {}, [1, 4, 8, 8], {"const": np.full((1, 1, 1, 1), 6.0)}),
        Layer("g", "pool_global_avg", ["mn"], {"keepdims": True}, [1, 4, 1, 1]),
        Layer("r", "reshape", ["g"], {"noise": True, "shape": [1, 4]}, [1, 4]),
    ]
    return CanonicalGraph(layers, ["x"], ["r"], {"framework": "test"})


def test_json_and_npz_round_trip(tmp_path: Path) -> None:
    graph = _raw()
    json_path, npz_path = graph.save(tmp_path / "graph.json")
    assert npz_path == tmp_path / "graph.npz"
    back = CanonicalGraph.load(json_path)
    assert back.to_json() == graph.to_json()
    np.testing.assert_array_equal(back["c"].params["weight"], W)
    assert back.ops() == graph.ops()


def test_canonicalize_folds_pad_bias_batchnorm_and_names_relu6() -> None:
    raw = _raw()
    canon = canonicalize(raw)
    assert canon.ops() == ["conv2d", "relu6", "pool_global_avg"]
    assert raw.ops()[0] == "identity"  # the input graph is untouched
    conv = canon["c"]
    assert conv.attrs["pads"] == [1, 1, 1, 1]
    assert conv.folded == ["pad p [1, 1, 1, 1]", "add a", "batch_norm bn epsilon=0.001"]
    scale = BN["gamma"].astype(np.float64) / np.sqrt(BN["var"].astype(np.float64) + 1e-3)
    np.testing.assert_allclose(conv.params["weight"], W * scale[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(
        conv.params["bias"], (B - BN["mean"]) * scale + BN["beta"], rtol=1e-6
    )
    assert canon.outputs == ["g"]
    assert canon["g"].attrs == {}
    # each canonical layer's output is a raw tensor: the folded BatchNorm's, Clip's minimum's
    assert [(lay.id, lay.tensor) for lay in canon.layers] == [
        ("x", "x"),
        ("c", "bn"),
        ("mx", "mn"),
        ("g", "g"),
    ]
    assert all(lay.tensor == lay.id for lay in raw.layers)


def test_the_tensor_field_round_trips_and_defaults_to_the_id(tmp_path: Path) -> None:
    canon = canonicalize(_raw())
    json_path, _ = canon.save(tmp_path / "graph.json")
    assert CanonicalGraph.load(json_path)["c"].tensor == "bn"
    old = canon.to_json()  # a graph.json written before the field existed
    for item in old["layers"]:
        del item["tensor"]
    assert [lay.tensor for lay in CanonicalGraph.from_json(old, {
        f"{lay.id}/{k}": v for lay in canon.layers for k, v in lay.params.items()
    }).layers] == ["x", "c", "mx", "g"]  # fmt: skip


def test_a_scale_folded_into_a_dense_layer_gives_it_the_mul_tensor() -> None:
    fc = RNG.normal(0, 1, (3, 4)).astype(np.float32)
    layers = [
        Layer("x", "input", shape=[1, 4]),
        Layer("d", "dense", ["x"], {"units": 3}, [1, 3], {"weight": fc}),
        Layer("m", "mul", ["d"], {}, [1, 3], {"const": np.full((1, 3), 2.0, np.float32)}),
        Layer("s", "softmax", ["m"], {"axis": 1, "log": False}, [1, 3]),
    ]
    canon = canonicalize(CanonicalGraph(layers, ["x"], ["s"]))
    assert [(lay.id, lay.tensor, lay.folded) for lay in canon.layers] == [
        ("x", "x", []),
        ("d", "m", ["mul m"]),
        ("s", "s", []),
    ]


def test_align_reports_an_extra_layer_with_its_reason() -> None:
    a = canonicalize(_raw())
    b = canonicalize(_raw())
    # B gets a sigmoid between the ReLU6 and the pooling: a graph change, not noise
    b.layers.insert(3, Layer("s", "sigmoid", ["mx"], {}, [1, 4, 8, 8]))
    b["g"].inputs = ["s"]
    b.reindex()
    alignment = align(a, b)
    assert [(p.a, p.b, p.direct) for p in alignment.pairs] == [
        ("x", "x", True),
        ("c", "c", True),
        ("mx", "mx", True),
        ("g", "g", False),
    ]
    assert [(u.graph, u.layer, u.reason) for u in alignment.unmatched] == [
        ("b", "s", "extra sigmoid in B between mx and g; A goes straight to pool_global_avg g")
    ]
    assert not alignment


def test_align_reports_a_missing_layer_and_continues_past_it() -> None:
    a = canonicalize(_raw())
    b = canonicalize(_raw())
    b.layers.remove(b["mx"])  # B lost its activation
    b["g"].inputs = ["c"]
    b.reindex()
    alignment = align(a, b)
    assert [(p.a, p.b) for p in alignment.pairs] == [("x", "x"), ("c", "c"), ("g", "g")]
    assert [(u.graph, u.layer, u.reason) for u in alignment.unmatched] == [
        ("a", "mx", "no relu6 of shape [1, 4, 8, 8] follows c in B (B has pool_global_avg g there)")
    ]


def test_unfoldable_constant_arithmetic_is_skipped_not_a_reordered_cascade() -> None:
    """onnx2keras' channels_first Conv2D adds its bias along W, which blocks every fold after
    it: B keeps add(W), mul, add(C) after the conv. Three extra layers, then the rest aligns
    (once 8 of the layers after it were unmatched and reported as reordered)."""
    a = canonicalize(_raw())
    b = canonicalize(_raw())
    extras = [
        Layer("aw", "add", ["c"], {}, [1, 4, 8, 8], {"const": B.reshape(1, 1, 1, 4)}),
        Layer("ms", "mul", ["aw"], {}, [1, 4, 8, 8], {"const": np.ones((1, 4, 1, 1))}),
        Layer("as", "add", ["ms"], {}, [1, 4, 8, 8], {"const": np.zeros((1, 4, 1, 1))}),
    ]
    b.layers[2:2] = extras
    b["mx"].inputs = ["as"]
    b.reindex()
    alignment = align(a, b)
    assert [(p.a, p.b, p.direct) for p in alignment.pairs] == [
        ("x", "x", True),
        ("c", "c", True),
        ("mx", "mx", False),
        ("g", "g", True),
    ]
    assert [(u.graph, u.layer) for u in alignment.unmatched] == [
        ("b", "aw"),
        ("b", "ms"),
        ("b", "as"),
    ]
    # three extra layers that compute with no constant still stop the walk after two
    for layer in extras:
        layer.op, layer.params = "sigmoid", {}
    assert [u.layer for u in align(a, b).unmatched if u.graph == "a"] == ["mx", "g"]


def test_a_reordered_flatten_has_no_raw_tensor_and_its_dense_layer_keeps_its_own() -> None:
    """NHWC features (h, w, c) reordered to (c, h, w) for the dense layer: the raw flatten
    tensor holds the old order, so no raw tensor equals the canonical flatten's output."""
    fc = RNG.normal(0, 1, (3, 8)).astype(np.float32)
    layers = [
        Layer("x", "input", shape=[1, 2, 2, 2]),
        Layer("f", "flatten", ["x"], {"order": [2, 3, 1]}, [1, 8]),
        Layer("d", "dense", ["f"], {"units": 3}, [1, 3], {"weight": fc}),
    ]
    canon = canonicalize(CanonicalGraph(layers, ["x"], ["d"]))
    assert [(lay.id, lay.tensor) for lay in canon.layers] == [("x", "x"), ("f", ""), ("d", "d")]
    assert canon["f"].attrs["order"] == [1, 2, 3]
