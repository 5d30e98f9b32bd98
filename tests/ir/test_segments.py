"""Segments between anchors: where the function check cuts, and what a measured point proves.

Pure: hand-made canonical graphs and divergences, no worker (the TVM side of the check,
feeding the source's tensors to the target, is tested in tests/commands/localize)."""

from __future__ import annotations

import numpy as np

from convdiff.ir.align import align
from convdiff.ir.graph import CanonicalGraph, Layer
from convdiff.ir.segments import FunctionCheck, Point, agrees_after, downstream, points, upstream


def _graph() -> CanonicalGraph:
    """x -> conv c1 -> relu r1 -> gelu-like other o1 -> conv c2 -> add(c2, r1) -> dense fc."""
    rng = np.random.default_rng(0)
    w = {name: rng.normal(size=shape).astype(np.float32) for name, shape in
         (("c1", (4, 3, 3, 3)), ("c2", (4, 4, 1, 1)), ("fc", (5, 4)))}  # fmt: skip
    return CanonicalGraph(
        [
            Layer("x", "input", shape=[-1, 3, 8, 8]),
            Layer("c1", "conv2d", ["x"], shape=[-1, 4, 8, 8], params={"weight": w["c1"]}),
            Layer("r1", "relu", ["c1"], shape=[-1, 4, 8, 8]),
            Layer("o1", "other", ["r1"], {"tvm_op": "relax.nn.gelu"}, [-1, 4, 8, 8]),
            Layer("c2", "conv2d", ["o1"], shape=[-1, 4, 8, 8], params={"weight": w["c2"]}),
            Layer("s", "add", ["c2", "r1"], shape=[-1, 4, 8, 8]),
            Layer("p", "pool_global_avg", ["s"], shape=[-1, 4]),
            Layer("fc", "dense", ["p"], shape=[-1, 5], params={"weight": w["fc"]}),
        ],
        ["x"],
        ["fc"],
    )


def test_points_are_the_anchors_inputs_and_the_outputs() -> None:
    g = _graph()
    found = points(g, g, align(g, g))
    assert found == [
        Point("o1", "o1", "o1", "o1", True),  # c2's input
        Point("p", "p", "p", "p", True),  # fc's input
        Point("fc", "fc", "fc", "fc", False),  # the output, compared only
    ]


def test_a_layer_reaches_the_points_its_value_can_change() -> None:
    g = _graph()
    stops = {"o1", "p", "fc"}
    assert downstream(g, "r1", stops) == {"o1", "p"}  # through gelu, and the residual add
    assert downstream(g, "c2", stops) == {"p"}
    assert downstream(g, "o1", stops) == {"o1"}
    assert sorted(upstream(g, "p", stops)) == ["c1", "c2", "p", "r1", "s"]  # o1 is fed


def test_only_points_that_agree_make_a_difference_harmless() -> None:
    g = _graph()
    check = FunctionCheck(points(g, g, align(g, g)), {"o1": 0.0, "p": 3e-3, "fc": 1e-7})
    assert agrees_after(check, g, "o1", "a")
    assert not agrees_after(check, g, "r1", "a")  # reaches p, which differs
    assert not agrees_after(None, g, "o1", "a")  # nothing measured proves anything
    check.relax(g, ["c2"], 5e-2)  # c2's weight lost precision: p is judged at 5e-2
    assert check.relaxed == {"p": 5e-2}
    assert agrees_after(check, g, "r1", "a")


def test_a_check_round_trips_through_json() -> None:
    g = _graph()
    check = FunctionCheck(points(g, g, align(g, g)), {"o1": 0.0, "p": None}, images=["a.png"])
    check.relax(g, ["c2"], 5e-2)
    again = FunctionCheck.from_json(check.to_json())
    assert again == check
    assert again.differs(again.points[1]) and not again.differs(again.points[2])  # unmeasured
