"""The generic ONNX fault injectors (tests/tiny/onnx_faults.py) on two small models built here:
a CNN (convs, ReLU6 as Clip, HardSigmoid, a concat of two branches, one branch muted by a zero
layer scale) and a token model (square MatMuls, LayerNormalization and a decomposed one,
attention Softmax, GELU decomposed around Erf). Each fault must pick the expected middle node,
keep the model valid and move its outputs; a muted candidate is skipped; a model without a
suitable node gives None."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.tiny.onnx_faults import FAULTS, Expected, inject, run_images, sample_inputs
from tests.tiny.onnx_models import save_graph

node = helper.make_node


def cnn(path: Path, seed: int = 0) -> Path:
    """[1,3,8,8] -> conv0 -> relu0 -> conv1 (3x3) -> relu6 (Clip 0..6) -> conv2 (1x1, square)
    -> relu2; beside it conv3 (3x3) -> sigmoid3 -> scale3 (x 0: a muted branch, as timm's zero
    init) and conv5 (3x3) -> hsig5; concat(relu2, hsig5, scale3 + relu2) -> conv4 (1x1) -> gap ->
    flatten -> fc (Gemm)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    weights = {
        "w0": w(4, 3, 3, 3),
        "w1": w(4, 4, 3, 3),
        "w2": w(4, 4, 1, 1),
        "w3": w(4, 4, 3, 3),
        "w5": w(4, 4, 3, 3),
        "w4": w(6, 12, 1, 1),
        "fc_w": w(5, 6),
        "fc_b": w(5),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(6.0, np.float32),
        "zero": np.array(0.0, np.float32),
    }
    nodes = [
        node("Conv", ["input", "w0"], ["c0"], "conv0", pads=[1, 1, 1, 1]),
        node("Relu", ["c0"], ["r0"], "relu0"),
        node("Conv", ["r0", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        node("Clip", ["c1", "lo", "hi"], ["r1"], "relu6"),
        node("Conv", ["r1", "w2"], ["c2"], "conv2"),
        node("Relu", ["c2"], ["r2"], "relu2"),
        node("Conv", ["r0", "w3"], ["c3"], "conv3", pads=[1, 1, 1, 1]),
        node("Sigmoid", ["c3"], ["s3"], "sigmoid3"),
        node("Mul", ["s3", "zero"], ["m3"], "scale3"),
        node("Add", ["m3", "r2"], ["a3"], "add3"),
        node("Conv", ["r0", "w5"], ["c5"], "conv5", pads=[1, 1, 1, 1]),
        node("HardSigmoid", ["c5"], ["h5"], "hsig5", alpha=1 / 6, beta=0.5),
        node("Concat", ["r2", "h5", "a3"], ["cat"], "concat", axis=1),
        node("Conv", ["cat", "w4"], ["c4"], "conv4"),
        node("GlobalAveragePool", ["c4"], ["g"], "gap"),
        node("Flatten", ["g"], ["f"], "flatten", axis=1),
        node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], "fc", transB=1),
    ]
    return save_graph(path, nodes, "cnn", [1, 3, 8, 8], "logits", [1, 5], weights)


def tokens(path: Path, seed: int = 0) -> Path:
    """[1,4,8] tokens -> embed (MatMul 8x8) -> ln1 (LayerNormalization) -> attention (q, k, v
    MatMuls, Softmax over keys) -> decomposed LayerNorm (eps Add 1e-6 -> Sqrt) -> mlp (MatMul
    8x16, GELU as x * 0.5 * (1 + erf(x / sqrt 2)), MatMul 16x8) -> mean over tokens -> head
    (MatMul 8x3). Opset 17."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    weights = {
        "embed": w(8, 8),
        "g1": np.ones(8, np.float32),
        "b1": np.zeros(8, np.float32),
        "wq": w(8, 8),
        "wk": w(8, 8),
        "wv": w(8, 8),
        "perm_k": np.array([0, 2, 1], np.int64),
        "two": np.array(2.0, np.float32),
        "eps": np.array(1e-6, np.float32),
        "g2": w(8),
        "w_up": w(8, 16),
        "sqrt2": np.array(np.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
        "w_down": w(16, 8),
        "head": w(8, 3),
    }
    nodes = [
        node("MatMul", ["input", "embed"], ["e"], "embed"),
        node("LayerNormalization", ["e", "g1", "b1"], ["n1"], "ln1", axis=-1, epsilon=1e-5),
        node("MatMul", ["n1", "wq"], ["q"], "q"),
        node("MatMul", ["n1", "wk"], ["k"], "k"),
        node("MatMul", ["n1", "wv"], ["v"], "v"),
        node("Transpose", ["k"], ["kt"], "kt", perm=[0, 2, 1]),
        node("MatMul", ["q", "kt"], ["scores"], "scores"),
        node("Softmax", ["scores"], ["attn"], "softmax", axis=-1),
        node("MatMul", ["attn", "v"], ["ctx"], "context"),
        node("ReduceMean", ["ctx"], ["mu"], "ln2_mean", axes=[-1]),
        node("Sub", ["ctx", "mu"], ["d"], "ln2_sub"),
        node("Pow", ["d", "two"], ["d2"], "ln2_pow"),
        node("ReduceMean", ["d2"], ["var"], "ln2_var", axes=[-1]),
        node("Add", ["var", "eps"], ["ve"], "ln2_eps"),
        node("Sqrt", ["ve"], ["sd"], "ln2_sqrt"),
        node("Div", ["d", "sd"], ["nd"], "ln2_div"),
        node("Mul", ["nd", "g2"], ["n2"], "ln2_scale"),
        node("MatMul", ["n2", "w_up"], ["up"], "mlp_up"),
        node("Div", ["up", "sqrt2"], ["us"], "gelu_div"),
        node("Erf", ["us"], ["ue"], "gelu_erf"),
        node("Add", ["ue", "one"], ["ua"], "gelu_add"),
        node("Mul", ["up", "ua"], ["um"], "gelu_mul"),
        node("Mul", ["um", "half"], ["gelu"], "gelu_half"),
        node("MatMul", ["gelu", "w_down"], ["down"], "mlp_down"),
        node("ReduceMean", ["down"], ["pooled"], "pool", axes=[1], keepdims=0),
        node("MatMul", ["pooled", "head"], ["logits"], "head"),
    ]
    weights.pop("perm_k")
    return save_graph(path, nodes, "tokens", [1, 4, 8], "logits", [1, 3], weights, opset=17)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx-faults")
    return {"cnn": cnn(folder / "cnn.onnx"), "tokens": tokens(folder / "tokens.onnx")}


# (model, fault) -> (node named, change made); None: no suitable node in that model
CASES: dict[tuple[str, str], tuple[str, str] | None] = {
    ("cnn", "transposed_square_weight"): (
        "conv2",
        "stored W^T as the weight of conv2 ([4, 4, 1, 1])",
    ),
    # conv3 is the middle-most weighted layer, but its branch is muted (x 0): conv5 is next
    ("cnn", "zeroed_weight"): ("conv5", "zeroed the weight of conv5 ([4, 4, 3, 3])"),
    ("cnn", "scaled_weight"): ("conv5", "weight x 1.5 of conv5 ([4, 4, 3, 3])"),
    ("cnn", "layernorm_epsilon"): None,
    ("cnn", "softmax_axis"): None,
    ("cnn", "activation_bound"): ("hsig5", "HardSigmoid hsig5 alpha 0.166667 -> 0.25"),
    ("cnn", "pads"): ("conv5", "Conv conv5 pads [1, 1, 1, 1] -> [2, 2, 0, 0]"),
    ("cnn", "dropped_activation"): ("hsig5", "dropped HardSigmoid hsig5 (readers now read c5)"),
    ("cnn", "swapped_concat"): ("concat", "Concat concat inputs 0 and 1 swapped (r2, h5)"),
    ("tokens", "transposed_square_weight"): ("v", "stored W^T as the weight of v ([8, 8])"),
    ("tokens", "zeroed_weight"): ("mlp_up", "zeroed the weight of mlp_up ([8, 16])"),
    ("tokens", "scaled_weight"): ("mlp_up", "weight x 1.5 of mlp_up ([8, 16])"),
    ("tokens", "layernorm_epsilon"): (
        "ln2_eps",
        "decomposed LayerNorm epsilon (Add ln2_eps) 1e-06 -> 0.1",
    ),
    ("tokens", "softmax_axis"): ("softmax", "Softmax softmax axis 2 -> 1"),
    ("tokens", "activation_bound"): None,
    ("tokens", "pads"): None,
    ("tokens", "dropped_activation"): (
        "gelu_erf",
        "dropped Erf gelu_erf (readers now read up)",
    ),
    ("tokens", "swapped_concat"): None,
}


def test_every_fault_is_covered() -> None:
    assert {fault for _, fault in CASES} == set(FAULTS)


@pytest.mark.parametrize(("model", "fault"), list(CASES), ids=[f"{m}-{f}" for m, f in CASES])
def test_inject(models: dict[str, Path], tmp_path: Path, model: str, fault: str) -> None:
    out = tmp_path / "faulty.onnx"
    expected = inject(models[model], fault, out)
    case = CASES[(model, fault)]
    if case is None:
        assert expected is None and not out.exists()
        return
    assert expected is not None
    stage, kinds = FAULTS[fault][1:]
    assert (expected.stage, expected.kind_options) == (stage, kinds)
    assert (expected.node_name, expected.change) == case
    faulty = onnx.load(out)
    onnx.checker.check_model(faulty)
    x = sample_inputs(faulty)
    moved = np.abs(run_images(faulty, x) - run_images(onnx.load(models[model]), x)).max()
    assert moved == pytest.approx(expected.max_abs_diff) and moved > 1e-3


def test_dropped_gelu_removes_its_five_ops(models: dict[str, Path], tmp_path: Path) -> None:
    expected = inject(models["tokens"], "dropped_activation", tmp_path / "f.onnx")
    assert expected is not None
    assert expected.also == ("gelu_div", "gelu_add", "gelu_mul", "gelu_half")
    names = {n.name for n in onnx.load(tmp_path / "f.onnx").graph.node}
    assert not names & set(expected.names)
    mlp_down = next(n for n in onnx.load(tmp_path / "f.onnx").graph.node if n.name == "mlp_down")
    assert mlp_down.input[0] == "up"


def test_a_shared_constant_is_copied_not_edited(models: dict[str, Path], tmp_path: Path) -> None:
    # relu6's bounds are initializers only it reads: edited in place; a HardSigmoid has none
    model = onnx.load(models["cnn"])
    clip = next(n for n in model.graph.node if n.name == "relu6")
    clip2 = onnx.helper.make_node("Clip", ["r2", "lo", "hi"], ["r2c"], "relu6b")
    model.graph.node.insert(list(model.graph.node).index(clip) + 3, clip2)
    concat = next(n for n in model.graph.node if n.name == "concat")
    concat.input[0] = "r2c"
    model.graph.node.remove(next(n for n in model.graph.node if n.name == "hsig5"))
    concat.input[1] = "c5"
    onnx.save(model, tmp_path / "shared.onnx")
    expected = inject(tmp_path / "shared.onnx", "activation_bound", tmp_path / "f.onnx")
    assert expected is not None and expected.change.endswith("max 6 -> 20")
    faulty = onnx.load(tmp_path / "f.onnx")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in faulty.graph.initializer}
    edited = next(n for n in faulty.graph.node if n.name == expected.node_name)
    other = next(n for n in faulty.graph.node if n.op_type == "Clip" and n is not edited)
    assert inits["hi"] == 6.0 and other.input[2] == "hi"
    assert edited.input[2] == f"{expected.node_name}_fault_2" and inits[edited.input[2]] == 20.0


def test_named_by_matches_stage_kind_and_either_layer_name() -> None:
    expected = Expected("pads", "hyperparams", ("pads", "asymmetric_pads"), "conv5", "", 1.0)
    finding = {"stage": "hyperparams", "kind": "asymmetric_pads", "source_layer": None}
    assert expected.named_by([{**finding, "target_layer": "conv5"}])
    assert not expected.named_by([{**finding, "target_layer": "conv1"}])
    assert not expected.named_by([{**finding, "kind": "epsilon", "target_layer": "conv5"}])
    assert not expected.named_by([{**finding, "stage": "weights", "target_layer": "conv5"}])
    dropped = Expected("dropped_activation", "graph", ("missing_layer",), "e", "", 1.0, ("d",))
    missing = {"stage": "graph", "kind": "missing_layer", "target_layer": None}
    assert dropped.named_by([{**missing, "source_layer": "d"}])


def test_a_bound_no_activation_reaches_is_lowered_instead(tmp_path: Path) -> None:
    # activations of about N(0, 1.5) never reach 6: raising ReLU6's bound moves nothing, so
    # the bound is halved (what a converter writing Clip(0, 3) would do)
    weights = {
        "w0": (1.5 * np.eye(3, dtype=np.float32)).reshape(3, 3, 1, 1),
        "w1": np.ones((2, 3, 1, 1), np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(6.0, np.float32),
    }
    nodes = [
        node("Conv", ["input", "w0"], ["c0"], "conv0"),
        node("Clip", ["c0", "lo", "hi"], ["r"], "relu6"),
        node("Conv", ["r", "w1"], ["out"], "conv1"),
    ]
    model = save_graph(tmp_path / "m.onnx", nodes, "m", [1, 3, 4, 4], "out", [1, 2, 4, 4], weights)
    expected = inject(model, "activation_bound", tmp_path / "f.onnx")
    assert expected is not None
    assert (expected.node_name, expected.change) == ("relu6", "Clip relu6 max 6 -> 3")
