"""The localization stages on hand-made canonical graphs (pure numpy, no framework, no TVM)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from convdiff.ir.align import align
from convdiff.ir.graph import CanonicalGraph, Layer
from convdiff.stages import StageContext, activations, graph, hyperparams, weights
from convdiff.stages.findings import Finding, ordered
from tests.tiny.faults import int8_grid

RNG = np.random.default_rng(0)
W = RNG.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
B = RNG.normal(0, 0.1, 4).astype(np.float32)
FC = RNG.normal(0, 0.5, (5, 4)).astype(np.float32)
CONV = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1, "kernel": [3, 3]}
POOL = {
    "kernel": [3, 3],
    "strides": [1, 1],
    "pads": [1, 1, 1, 1],
    "dilation": [1, 1],
    "ceil_mode": False,
    "count_include_pad": False,
}


def model() -> CanonicalGraph:
    """input -> conv (BN folded) -> relu6 -> avg pool -> global pool -> dense -> softmax."""
    layers = [
        Layer("x", "input", shape=[1, 3, 8, 8]),
        Layer(
            "c",
            "conv2d",
            ["x"],
            dict(CONV),
            [1, 4, 8, 8],
            {"weight": W.copy(), "bias": B.copy()},
            folded=["add a", "batch_norm bn epsilon=0.001"],
        ),
        Layer("r", "relu6", ["c"], {}, [1, 4, 8, 8]),
        Layer("p", "pool_avg", ["r"], dict(POOL), [1, 4, 8, 8]),
        Layer("g", "pool_global_avg", ["p"], {}, [1, 4, 1, 1]),
        Layer("d", "dense", ["g"], {"units": 5}, [1, 5], {"weight": FC.copy()}),
        Layer("s", "softmax", ["d"], {"axis": 1, "log": False}, [1, 5]),
    ]
    return CanonicalGraph(layers, ["x"], ["s"])


def findings_of(stage, a: CanonicalGraph, b: CanonicalGraph, **kw) -> list[tuple]:
    ctx = StageContext(a, b, align(a, b), **kw)
    return [(f.stage, f.kind, f.source_layer, f.target_layer) for f in stage.run(ctx)]


def one(stage, a: CanonicalGraph, b: CanonicalGraph, **kw) -> Finding:
    ctx = StageContext(a, b, align(a, b), **kw)
    found = stage.run(ctx)
    assert len(found) == 1, found
    return found[0]


def with_param(layer: str, name: str, value: np.ndarray | None) -> CanonicalGraph:
    g = model()
    if value is None:
        del g[layer].params[name]
    else:
        g[layer].params[name] = np.asarray(value, dtype=np.float32)
    return g


# -- weights ---------------------------------------------------------------------------------


def test_equal_models_and_float32_rounding_give_no_finding() -> None:
    a, b = model(), model()
    b["c"].params["weight"] = (W.astype(np.float64) * (1 + 1e-7)).astype(np.float32)
    for stage in (weights, hyperparams, graph):
        assert findings_of(stage, a, b) == []


@pytest.mark.parametrize(
    ("layer", "name", "value", "kind", "label"),
    [
        ("c", "weight", int8_grid(W), "precision", "int8 grid (per-channel, symmetric)"),
        ("d", "weight", FC.astype(np.float16), "precision", "float16 rounding"),
        ("c", "weight", W.transpose(0, 1, 3, 2), "transposed", None),
        ("c", "weight", W[:, :, ::-1, ::-1], "flipped", None),
        ("c", "bias", np.zeros(4), "zeroed", None),
        ("c", "bias", None, "dropped", None),
        ("d", "weight", FC * 0.5, "scale", None),
        ("c", "bias", B + 0.25, "shift", None),
        ("d", "weight", FC.T.copy(), "layout", None),
        ("d", "weight", FC + RNG.normal(0, 0.1, FC.shape), "value", None),
    ],
)
def test_weight_fault_classes(layer, name, value, kind, label) -> None:
    b = with_param(layer, name, value)
    f = one(weights, model(), b)
    assert (f.stage, f.kind, f.source_layer, f.target_layer) == ("weights", kind, layer, layer)
    assert f.evidence["param"] == name
    if label:
        assert f.evidence["grid"] == label


def test_bfloat16_is_told_from_float16() -> None:
    bits = FC.view(np.uint32).astype(np.uint64)
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    f = one(weights, model(), with_param("d", "weight", bf16))
    assert f.evidence["grid"] == "bfloat16 rounding"


def test_precision_numbers_are_exact() -> None:
    quantized = int8_grid(W)
    f = one(weights, model(), with_param("c", "weight", quantized))
    error = np.abs(W.astype(np.float64) - quantized)
    assert f.evidence["max_abs"] == pytest.approx(error.max(), rel=1e-5)
    assert f.evidence["max_rel"] == pytest.approx(error.max() / np.abs(W).max(), rel=1e-5)
    step = np.abs(quantized).reshape(4, -1).max(axis=1) / 127
    assert f.evidence["step_max"] == pytest.approx(step.max(), rel=1e-5)


def test_extra_class_row_first() -> None:
    b = model()
    b["d"].params["weight"] = np.concatenate([np.ones((1, 4), np.float32), FC])
    f = one(weights, model(), b)
    assert f.kind == "extra_class"
    assert f.evidence["extra_index"] == 0 and f.evidence["shape_b"] == [6, 4]


def test_quant_evidence_from_the_file_wins() -> None:
    quant = {"c": {"tensor": "conv/kernel", "dtype": "INT8", "scales": [0.01, 0.02]}}
    f = one(weights, model(), with_param("c", "weight", W + 0.001), quant=quant)
    assert f.kind == "precision"
    assert f.evidence["grid"] == "int8 in the target file (per-channel scales)"
    assert f.evidence["tensor"] == "conv/kernel"


def test_a_changed_epsilon_is_a_hyperparameter_not_a_weight_fault() -> None:
    b = model()
    scale = np.sqrt((0.5 + 1e-3) / (0.5 + 1e-5)).astype(np.float32)
    b["c"].params["weight"] = W * scale
    b["c"].params["bias"] = B * 0.9
    b["c"].folded = ["add a", "batch_norm bn epsilon=1e-05"]
    assert findings_of(weights, model(), b) == []
    f = one(hyperparams, model(), b)
    assert (f.kind, f.source_layer, f.target_layer) == ("epsilon", "bn", "bn")
    assert (f.evidence["source"], f.evidence["target"]) == (0.001, 1e-05)


def test_layer_names_from_the_files_are_used() -> None:
    b = with_param("c", "bias", np.zeros(4))
    f = one(weights, model(), b, names_a={"c": "conv1"}, names_b={"c": "model/conv1"})
    assert (f.source_layer, f.target_layer) == ("conv1", "model/conv1")


# -- hyperparameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "attr", "value", "kind"),
    [
        ("c", "pads", [0, 0, 0, 0], "lost_pads"),
        ("c", "pads", [0, 0, 1, 1], "asymmetric_pads"),
        ("c", "pads", [2, 2, 2, 2], "pads"),
        ("c", "strides", [2, 2], "strides"),
        ("c", "dilation", [2, 2], "dilation"),
        ("c", "groups", 4, "groups"),
        ("p", "count_include_pad", True, "count_include_pad"),
        ("p", "ceil_mode", True, "ceil_mode"),
        ("p", "kernel", [2, 2], "kernel"),
        ("s", "axis", 0, "axis"),
    ],
)
def test_hyperparameter_mismatches(layer, attr, value, kind) -> None:
    b = model()
    source_value = b[layer].attrs[attr]
    b[layer].attrs[attr] = value
    f = one(hyperparams, model(), b)
    assert (f.stage, f.kind, f.source_layer, f.target_layer) == ("hyperparams", kind, layer, layer)
    assert (f.evidence["source"], f.evidence["target"]) == (source_value, value)


def test_conv_kernel_and_dense_units_are_left_to_the_weights_stage() -> None:
    b = model()
    b["c"].attrs["kernel"] = [1, 3]
    b["d"].attrs["units"] = 6
    assert findings_of(hyperparams, model(), b) == []


def test_relu6_against_clip_is_a_clip_bounds_finding_not_a_graph_change() -> None:
    b = model()
    b["r"].op, b["r"].attrs = "clip", {"min": 0.0, "max": 5.0}
    f = one(hyperparams, model(), b)
    assert (f.kind, f.source_layer, f.target_layer) == ("clip_bounds", "r", "r")
    assert (f.evidence["source"], f.evidence["target"]) == ([0.0, 6.0], [0.0, 5.0])
    assert findings_of(graph, model(), b) == []


def test_activation_kind_changed() -> None:
    b = model()
    b["r"].op = "sigmoid"
    f = one(hyperparams, model(), b)
    assert (f.kind, f.evidence["source_op"], f.evidence["target_op"]) == (
        "activation",
        "relu6",
        "sigmoid",
    )


# -- graph -----------------------------------------------------------------------------------


def test_missing_and_extra_layers() -> None:
    b = model()
    b.layers.remove(b["p"])  # the target lost its average pooling
    b["g"].inputs = ["r"]
    b.layers.insert(6, Layer("t", "tanh", ["d"], {}, [1, 5]))  # and gained a tanh
    b["s"].inputs = ["t"]
    b.reindex()
    assert findings_of(graph, model(), b) == [
        ("graph", "missing_layer", "p", None),
        ("graph", "extra_layer", None, "t"),
    ]


def test_reordered_layers() -> None:
    b = copy.deepcopy(model())
    # the target pools before its activation: conv -> pool -> relu6 -> global pool
    b["p"].inputs, b["r"].inputs, b["g"].inputs = ["c"], ["p"], ["r"]
    b.layers = [b[i] for i in ("x", "c", "p", "r", "g", "d", "s")]
    b.reindex()
    found = findings_of(graph, model(), b)
    assert found == [("graph", "reordered", "p", "p")]


def test_rank_puts_the_layer_with_most_evidence_first() -> None:
    found = [
        Finding("weights", "precision", "c", "c", "x", {}, "", 0.004),
        Finding("hyperparams", "pads", "c", "c", "x"),
        Finding("hyperparams", "ceil_mode", "p", "p", "x"),
    ]
    ranked = graph.rank(found)
    assert [(r["layer"], r["kinds"]) for r in ranked] == [
        ("c", ["weights:precision", "hyperparams:pads"]),
        ("p", ["hyperparams:ceil_mode"]),
    ]
    assert ranked[0]["score"] == pytest.approx(3.004)


def test_findings_order_and_json_round_trip() -> None:
    found = [
        Finding("graph", "extra_layer", None, "t", "x"),
        Finding("weights", "zeroed", "c", "c", "x", {"param": "bias"}, "copy"),
    ]
    assert [f.stage for f in ordered(found)] == ["weights", "graph"]
    assert Finding.from_dict(found[1].to_dict()) == found[1]
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        Finding("nope", "k", None, None, "x")


# -- activation evidence (graph stage) ------------------------------------------------------


def test_divergence_is_relative_to_the_sources_largest_magnitude() -> None:
    a = np.array([[[1.0, -4.0]], [[2.0, 0.5]]])  # 2 images
    b = a + np.array([[[0.0, 0.0]], [[0.0, 0.2]]])
    assert activations.divergence(a, b) == pytest.approx(0.2 / 4.0)
    assert activations.divergence(a, a) == 0.0
    # [N,C,1,1] against [N,C] compares (global pooling kept its axes on one side only)
    assert activations.divergence(np.ones((2, 3, 1, 1)), np.ones((2, 3))) == 0.0
    assert activations.divergence(np.ones((2, 3, 4, 4)), np.ones((2, 3, 2, 2))) is None
    assert activations.divergence(np.zeros((1, 2)), np.full((1, 2), 1e-13)) == pytest.approx(0.1)
    # float32 noise stays far below the tolerance, an int8 grid far above it
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2, 8, 4, 4)).astype(np.float32)
    noisy = (x.astype(np.float64) * (1 + 1e-7)).astype(np.float32)
    assert not activations.beyond(activations.divergence(x, noisy))
    assert activations.beyond(activations.divergence(x, int8_grid(x)))


def _acts(g: CanonicalGraph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {lay.tensor: rng.normal(0, 1, [2, *lay.shape[1:]]) for lay in g.layers}


def test_compare_walks_the_pairs_in_source_order_with_input_divergence() -> None:
    a, b = model(), model()
    acts_a = _acts(a)
    acts_b = {k: v.copy() for k, v in acts_a.items()}
    acts_b["p"] = acts_b["p"] * 1.5  # the avg pool is where the target parts
    acts_b["g"], acts_b["d"], acts_b["s"] = acts_b["g"] + 1.0, acts_b["d"] + 1.0, acts_b["s"] + 1
    ctx = StageContext(a, b, align(a, b))
    rows = activations.compare(a, b, activations.pairs(ctx), acts_a, acts_b)
    assert [(r["source"], r["op"]) for r in rows] == [
        ("x", "input"), ("c", "conv2d"), ("r", "relu6"), ("p", "pool_avg"),
        ("g", "pool_global_avg"), ("d", "dense"), ("s", "softmax"),
    ]  # fmt: skip
    assert [r["divergence"] == 0.0 for r in rows] == [True] * 3 + [False] * 4
    first = activations.first_divergence(rows)
    assert first is not None and first["source"] == "p"
    assert first["input_divergence"] == 0.0
    assert first["divergence"] == pytest.approx(0.5)  # max|1.5a - a| / max|a|
    assert [r["source"] for r in activations.growth(rows)][0] == "p"
    assert activations.first_divergence(rows[:3]) is None  # all agree: nothing to name


def test_a_first_divergence_finding_names_both_layers_and_its_evidence() -> None:
    a, b = model(), model()
    rows = [
        {"source": "x", "target": "x", "op": "input", "divergence": 0.5,
         "input_divergence": None, "input_shape_mismatch": False, "shapes": [[3, 8, 8]] * 2},
        {"source": "c", "target": "c", "op": "conv2d", "divergence": 1e-7,
         "input_divergence": 0.5, "input_shape_mismatch": False, "shapes": [[4, 8, 8]] * 2},
        {"source": "r", "target": "r", "op": "relu6", "divergence": 2e-3,
         "input_divergence": 1e-7, "input_shape_mismatch": False, "shapes": [[4, 8, 8]] * 2},
        {"source": "p", "target": "p", "op": "pool_avg", "divergence": 3e-3,
         "input_divergence": 2e-3, "input_shape_mismatch": False, "shapes": [[4, 8, 8]] * 2},
    ]  # fmt: skip
    act = {"images": ["cat.jpg"], "tolerance": 1e-4, "rows": rows}
    ctx = StageContext(a, b, align(a, b), {"r": "relu_a"}, {"r": "relu_b"}, evidence={
        "activations": act})  # fmt: skip
    [found] = graph.run(ctx)
    assert (found.stage, found.kind, found.source_layer, found.target_layer) == (
        "graph", "first_divergence", "relu_a", "relu_b",
    )  # fmt: skip
    assert found.summary == (
        "the first aligned layer whose outputs differ on the 1 disagreeing image(s): relu6 "
        "relu_a -> relu_b (relative divergence 0.002; its inputs agree)"
    )
    assert found.evidence["images"] == ["cat.jpg"]
    assert found.evidence["input_divergence"] == 1e-7
    assert found.evidence["target_tensor"] == "r"
    # the ranking adds activation growth: relu6 grew 20x over the tolerance, the pool 1.5x
    ranked = graph.rank([found], graph.activation_growth(ctx))
    assert [(r["layer"], r["kinds"]) for r in ranked] == [
        ("relu_b", ["graph:first_divergence", "activations:growth"]),
        ("p", ["activations:growth"]),
    ]
    assert ranked[0]["score"] == pytest.approx(2.0 + np.log10(20) / 2, abs=1e-6)
    assert ranked == graph.rank([found], graph.activation_growth(ctx))  # deterministic
    # no divergence anywhere (or no evidence at all): no finding
    calm = [{**r, "divergence": 0.0} for r in rows]
    ctx.evidence = {"activations": {**act, "rows": calm}}
    assert graph.run(ctx) == [] and graph.activation_growth(ctx) == []
    ctx.evidence = {"activations": {"note": "no image's top-1 label differs"}}
    assert graph.run(ctx) == []


def test_a_changed_shape_is_a_divergence_and_scores_once() -> None:
    rows = [
        {"source": "c", "target": "c", "op": "conv2d", "divergence": None,
         "input_divergence": 0.0, "input_shape_mismatch": False, "shapes": [[4, 8, 8], [4, 6, 6]]},
        {"source": "r", "target": "r", "op": "relu6", "divergence": None,
         "input_divergence": None, "input_shape_mismatch": True, "shapes": [[4, 8, 8], [4, 6, 6]]},
    ]  # fmt: skip
    assert activations.first_divergence(rows)["source"] == "c"
    assert [(r["source"], r["growth_score"]) for r in activations.growth(rows)] == [("c", 1.0)]


def test_inputs_stage_names_a_changed_interpolation_even_against_an_older_report() -> None:
    """A spec recorded before specs had an interpolation reads as bilinear."""
    from convdiff.stages.inputs import differing_fields, findings

    old = {
        "size": [224, 224],
        "resize": "center-crop",
        "crop_fraction": 0.875,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "channels": "RGB",
        "description": "old",
    }
    new = {**old, "interpolation": "bicubic", "description": "new"}
    assert differing_fields(old, {**old, "interpolation": "bilinear"}) == []
    assert differing_fields(old, new) == ["interpolation"]
    evidence = {
        "source_spec": old,
        "target_spec": new,
        "same_tensors": {"images": 4, "top1_discrepancy": 0.0},
        "own_preprocessing": {"top1_discrepancy": 25.0},
    }
    (finding,) = findings(evidence)
    assert finding.evidence["differing"] == {"interpolation": ["bilinear", "bicubic"]}
    assert finding.suggestion.endswith("interpolation bicubic -> bilinear")
