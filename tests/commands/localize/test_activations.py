"""`convdiff localize` with every stage: the graph stage's activation evidence.

Both models run once on TVM (one compile each) on the images whose top-1 labels differ; the
first aligned layer whose outputs part is named. The target runs once more, its segments fed
the source's tensors at the anchors (the function check). Tiny ONNX fault models
(tests/tiny/faults.py), the 16 embedded sample images (one of which, hubble_deep_field.jpg,
changes label under the faults below), the session's workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from convdiff.commands.localize.flow import LocalizeConfig, localize
from convdiff.core.progress import Progress
from convdiff.runtime.pool import WorkerPool
from tests.tiny.faults import inject

RUNS = ["x-source.npy", "y-source.npy", "y-target.npy", "y-target-tvm.npz"]
FUNCTION = ["act-source.npz", "function-fed.npz", "function-target.npz"]


def _localize(pool: WorkerPool, source: Path, target: Path, out: Path):
    config = LocalizeConfig(str(source), str(target), out=out)  # the default: all five stages
    return localize(config, Progress(enabled=False), pool)


def _strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize(
    ("fault", "other", "layer"),
    [
        ("transposed_weights", ("weights", "transposed"), "conv2"),
        ("relu6_bounds", ("hyperparams", "clip_bounds"), "relu6"),
        ("lost_conv_pads", ("hyperparams", "lost_pads"), "conv2"),  # a changed output shape
    ],
)
def test_the_first_diverging_layer_is_the_faulty_one(
    pool: WorkerPool, base: Path, tmp_path: Path, fault: str, other: tuple, layer: str
) -> None:
    target = inject(base, fault, tmp_path / f"{fault}.onnx")
    report = _localize(pool, base, target, tmp_path / "out")
    assert report.stages == ["inputs", "tools", "weights", "hyperparams", "graph"]
    assert [(f.stage, f.kind) for f in report.findings] == [
        ("inputs", "agreement"), ("tools", "converter"), other, ("graph", "first_divergence"),
    ]  # fmt: skip
    assert report.crashes == [] and report.exit_code == 1
    found = report.findings[-1]
    assert (found.source_layer, found.target_layer) == (layer, layer)
    assert found.evidence["images"] == ["hubble_deep_field.jpg"]
    assert found.evidence["input_divergence"] == 0.0
    if fault == "lost_conv_pads":
        assert found.evidence["divergence"] is None
        assert found.evidence["shapes"] == [[8, 4, 4], [8, 2, 2]]
    else:
        assert found.evidence["divergence"] > 1e-2
    # the ranking: the faulty layer first, its findings and its activation growth together
    top = report.suspects[0]
    assert top["layer"] == layer
    assert top["kinds"] == [
        f"{other[0]}:{other[1]}",
        "graph:first_divergence",
        "activations:growth",
    ]
    # one TVM run per model: the target's gives the tools stage's outputs and its activations
    runs = tmp_path / "out" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        [*RUNS, *FUNCTION, "act-target.npz", "y-source-tvm.npz"]
    )
    written = _strict_json(tmp_path / "out" / "report.json")
    act = written["runs"]["activations"]
    assert (act["images"], act["indices"], act["disagreeing"]) == (
        ["hubble_deep_field.jpg"],
        [9],
        1,
    )
    assert act["tolerance"] == 1e-4 and act["compared"] == 10 and len(act["rows"]) == 10
    assert act["source"]["missing"] == [] and act["target"]["missing"] == []
    assert written["suspects"][0]["layer"] == layer
    assert "## Activations" in (tmp_path / "out" / "report.md").read_text()


def test_models_that_agree_get_no_divergence_and_a_clear_note(
    pool: WorkerPool, base: Path, tmp_path: Path
) -> None:
    report = _localize(pool, base, base, tmp_path / "out")
    assert [(f.stage, f.kind) for f in report.findings] == [
        ("inputs", "agreement"),
        ("tools", "agreement"),
    ]
    assert report.exit_code == 0 and report.suspects == []
    note = (
        "no image's top-1 label differs between the models (of 16): the first-divergence check "
        "was skipped (the segments were compared by function)"
    )
    assert report.notes == [f"graph: {note}"]
    assert report.runs["activations"]["note"] == note
    assert "rows" not in report.runs["activations"]
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == sorted(
        [*RUNS, *FUNCTION, "y-source-tvm.npz"]
    )
    function = report.runs["function"]
    assert function["images"] == ["astronaut.png"]
    assert [p["divergence"] for p in function["points"]] == [0.0] * len(function["points"])
    assert f"- note: graph: {note}" in (tmp_path / "out" / "report.md").read_text()


def test_a_keras_source_is_read_through_its_float_conversion_in_logical_layout(
    pool: WorkerPool, rich_onnx: Path, rich_keras: str, tmp_path: Path
) -> None:
    """Keras (NHWC, via the TFLiteConverter) against an NCHW ONNX file whose second conv's
    kernel is transposed: the layers before it agree to float noise across layouts, the
    conv is the first to part; 13 images disagree, 4 are compared and the note says so."""
    model = onnx.load(rich_onnx)
    w2 = next(i for i in model.graph.initializer if i.name == "w2")
    w2.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w2).transpose(0, 1, 3, 2), "w2"))
    onnx.save(model, tmp_path / "t.onnx")
    report = _localize(pool, Path(rich_keras), tmp_path / "t.onnx", tmp_path / "out")
    found = report.findings[-1]
    # the Keras layer (onnx2keras names it after the ONNX node), not its conversion's op
    assert (found.kind, found.source_layer, found.target_layer) == ("first_divergence", "c2", "c2")
    act = report.runs["activations"]
    assert act["note"] == "activations compared on the first 4 of 13 disagreeing images"
    assert report.notes == [f"graph: {act['note']}"]
    assert [r["op"] for r in act["rows"][:4]] == ["input", "conv2d", "relu6", "pool_max"]
    assert max(r["divergence"] for r in act["rows"][:4]) < 1e-6
    assert report.imports["source"]["route"] == "keras -> tflite (TFLiteConverter)"
