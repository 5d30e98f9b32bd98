"""The stages with a function check: what the segments prove decides what is reported.

Hand-made canonical graphs (tests/stages/test_stages.py's model) and hand-made divergences at
the points (:class:`convdiff.ir.segments.FunctionCheck`): pure numpy, no TVM."""

from __future__ import annotations

import copy

from convdiff.ir.align import align
from convdiff.ir.graph import CanonicalGraph, Layer
from convdiff.ir.segments import FunctionCheck, points
from convdiff.stages import StageContext, graph, hyperparams, weights
from tests.stages.test_stages import model


def _ctx(a: CanonicalGraph, b: CanonicalGraph, differ: set[str]) -> StageContext:
    """Both graphs aligned; every point measured, those in ``differ`` (target ids) beyond."""
    alignment = align(a, b)
    found = points(a, b, alignment)
    check = FunctionCheck(found, {p.b: (1e-2 if p.b in differ else 0.0) for p in found})
    return StageContext(a, b, alignment, function=check)


def _kinds(findings: list) -> list[tuple]:
    return [(f.stage, f.kind, f.source_layer, f.target_layer, bool(f.evidence.get("latent")))
            for f in findings]  # fmt: skip


def test_the_points_are_the_conv_and_dense_inputs_and_the_output() -> None:
    a = model()
    assert [(p.a, p.fed) for p in points(a, a, align(a, a))] == [("g", True), ("s", False)]


def test_an_attribute_in_a_segment_that_agrees_is_latent() -> None:
    a, b = model(), model()
    b["p"].attrs["ceil_mode"] = True  # changes nothing at this size
    found = hyperparams.run(_ctx(a, b, differ=set()))
    assert _kinds(found) == [("hyperparams", "ceil_mode", "p", "p", True)]
    assert not found[0].is_fault


def test_an_attribute_in_a_segment_that_differs_is_a_fault() -> None:
    a, b = model(), model()
    b["p"].attrs["pads"] = [0, 0, 0, 0]
    found = hyperparams.run(_ctx(a, b, differ={"g"}))
    assert _kinds(found) == [("hyperparams", "lost_pads", "p", "p", False)]


def test_a_scaled_weight_the_next_ops_undo_is_latent() -> None:
    a, b = model(), model()
    b["c"].params["weight"] = b["c"].params["weight"] * 2.0
    found = weights.run(_ctx(a, b, differ=set()))
    assert {(f.kind, bool(f.evidence.get("latent"))) for f in found} == {("scale", True)}


def _with_reshape_and_relu(extra_relu: bool) -> CanonicalGraph:
    """The model with a reshape pair (an exporter's) after the avg pool, and maybe one more
    relu there."""
    g = copy.deepcopy(model())
    layers = list(g.layers)
    at = [lay.id for lay in layers].index("p") + 1
    new = [
        Layer("rs", "reshape", ["p"], {}, [1, 4, 64]),
        Layer("rs2", "reshape", ["rs"], {}, [1, 4, 8, 8]),
    ]
    if extra_relu:
        new.append(Layer("rx", "relu", ["rs2"], {}, [1, 4, 8, 8]))
    layers[at:at] = new
    layers[[lay.id for lay in layers].index("g")].inputs = [new[-1].id]
    return CanonicalGraph(layers, g.inputs, g.outputs)


def test_in_a_segment_that_differs_only_a_users_op_whose_count_differs_is_named() -> None:
    a = model()
    noise = _with_reshape_and_relu(extra_relu=False)
    assert _kinds(graph.run(_ctx(a, noise, differ={"g"}))) == [
        ("graph", "function_differs", "g", "g", False)
    ]  # the reshapes are an exporter's: the segment is named, not them
    relu = _with_reshape_and_relu(extra_relu=True)
    assert _kinds(graph.run(_ctx(a, relu, differ={"g"}))) == [
        ("graph", "extra_layer", None, "rx", False)
    ]


def test_in_a_segment_that_agrees_nothing_structural_is_reported() -> None:
    a, b = model(), _with_reshape_and_relu(extra_relu=True)
    assert graph.run(_ctx(a, b, differ=set())) == []
