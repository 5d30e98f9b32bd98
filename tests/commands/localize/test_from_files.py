"""A model TVM cannot import still gets the weights stage, on the tensors of both files.

The target holds a Celu, which onnxruntime runs and TVM 0.27's ONNX frontend does not
implement: the import fails deterministically, ``report.error`` says so (exit 2), and the
weights stage compares the tensors read from the two files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from convdiff.commands.localize.flow import GRAPH_STAGES, LocalizeConfig, localize
from convdiff.commands.localize.from_files import weights_from_files
from convdiff.core.progress import Progress
from convdiff.inputs.source import resolve_source
from convdiff.runtime.pool import WorkerPool
from tests.tiny.faults import _array, _node, _set_array
from tests.tiny.onnx_models import save_graph

REFUSED = "TVM cannot import the target {}: unsupported op Celu (TVM ONNX frontend; "


def _celu_copy(base: Path, out: Path, scale: float) -> Path:
    """``base`` with relu2 made a Celu (TVM refuses it) and conv1's weight times ``scale``."""
    model = onnx.load(base)
    _set_array(model, "w1", _array(model, "w1") * scale)
    _node(model, "relu2").op_type = "Celu"
    onnx.save(model, out)
    return out


def _localize(pool: WorkerPool, source: Path | str, target: Path, out: Path):
    config = LocalizeConfig(str(source), str(target), out=out, stages=GRAPH_STAGES)
    return localize(config, Progress(enabled=False), pool)


@pytest.mark.workers
def test_a_scaled_weight_is_found_although_tvm_refuses_the_target(
    pool: WorkerPool, base: Path, tmp_path: Path
) -> None:
    target = _celu_copy(base, tmp_path / "celu.onnx", 2.0)
    report = _localize(pool, base, target, tmp_path / "out")
    assert report.error.startswith(REFUSED.format("celu.onnx"))
    assert report.exit_code == 2
    found = [(f.stage, f.kind, f.source_layer, f.target_layer) for f in report.findings]
    assert found == [("weights", "scale", "w1", "w1")]
    assert report.findings[0].summary == "conv2d weight: the source's times 2"
    assert report.notes == [
        "weights: read from the model files because TVM cannot import the target celu.onnx; "
        "hyperparams and graph were not run (10 of the source's 12 float tensors paired by "
        "content with the target's 12 and compared; tensors under 8 values are not compared, "
        "and BatchNorm is not folded (a per-channel scale of a conv may be a BatchNorm the "
        "converter folded into it))",
        "hyperparams: not run (TVM cannot import the target celu.onnx)",
        "graph: not run (TVM cannot import the target celu.onnx)",
    ]
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(f["stage"], f["kind"], f["source_layer"]) for f in written["findings"]] == [
        ("weights", "scale", "w1")
    ]
    assert written["error"] == report.error
    assert "the source's times 2" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.workers
def test_unchanged_weights_give_no_finding_and_still_exit_2(
    pool: WorkerPool, base: Path, tmp_path: Path
) -> None:
    target = _celu_copy(base, tmp_path / "same.onnx", 1.0)
    report = _localize(pool, base, target, tmp_path / "out")
    assert report.error.startswith(REFUSED.format("same.onnx"))
    assert report.findings == [] and report.exit_code == 2


@pytest.mark.workers
def test_an_unreadable_file_is_a_note(pool: WorkerPool, base: Path, tmp_path: Path) -> None:
    """A target whose tensors cannot be read (its initializer is cut short): a note, no crash."""
    model = onnx.load(_celu_copy(base, tmp_path / "cut.onnx", 1.0))
    w2 = next(i for i in model.graph.initializer if i.name == "w2")
    w2.raw_data = w2.raw_data[:12]
    target = tmp_path / "cut.onnx"
    onnx.save(model, target)
    report = _localize(pool, base, target, tmp_path / "out")
    assert report.exit_code == 2 and report.findings == [] and report.crashes == []
    assert report.notes[0].startswith(
        "weights: read from the model files because TVM cannot import the target cut.onnx; "
        "hyperparams and graph were not run (could not read the target's tensors from "
        "cut.onnx: "
    )


def _onnx_of_torch_source(weights: dict[str, np.ndarray], path: Path, scale: float) -> Path:
    """tests.tiny.repair_frameworks.tiny_named written by hand as ONNX, with its BatchNorm
    unfolded, fc as a MatMul ([in, out], as the torch exporter writes a Linear), a Celu in
    place of the second ReLU, and conv1's weight times ``scale``."""
    node = helper.make_node
    nodes = [
        node("Conv", ["input", "c1w", "c1b"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c1", "g", "be", "m", "v"], ["bn"], "bn1", epsilon=1e-5),
        node("Relu", ["bn"], ["r"], "relu"),
        node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p", "c2w", "c2b"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        node("Celu", ["c2"], ["r2"], "relu2"),
        node("GlobalAveragePool", ["r2"], ["gap"], "gap"),
        node("Flatten", ["gap"], ["flat"], "flatten"),
        node("MatMul", ["flat", "fcw"], ["mm"], "fc"),
        node("Add", ["mm", "fcb"], ["y"], "fc_bias"),
    ]
    keys = {
        "c1w": "conv1.weight",
        "c1b": "conv1.bias",
        "g": "bn1.weight",
        "be": "bn1.bias",
        "m": "bn1.running_mean",
        "v": "bn1.running_var",
        "c2w": "conv2.weight",
        "c2b": "conv2.bias",
        "fcb": "fc.bias",
    }
    arrays = {k: weights[v].astype(np.float32) for k, v in keys.items()}
    arrays["c1w"] = arrays["c1w"] * np.float32(scale)
    arrays["fcw"] = np.ascontiguousarray(weights["fc.weight"].T)
    return save_graph(path, nodes, "tiny_named", [1, 3, 16, 16], "y", [1, 5], arrays)


@pytest.mark.workers
def test_a_torch_source_against_an_onnx_target_tvm_refuses(
    pool: WorkerPool, torch_source: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state.npz"
    got = pool.call(
        "torch",
        "tests.tiny.repair_frameworks:torch_weights",
        path=str(torch_source),
        out_npz=str(state),
    )
    assert got, got.message
    with np.load(state) as data:
        weights = {k: data[k] for k in data.files}
    for scale, expected in ((1.0, []), (3.0, [("weights", "scale", "conv1.weight", "c1w")])):
        target = _onnx_of_torch_source(weights, tmp_path / f"x{scale:g}.onnx", scale)
        report = _localize(pool, torch_source, target, tmp_path / f"out{scale:g}")
        assert report.error.startswith(REFUSED.format(target.name)) and report.exit_code == 2
        found = [(f.stage, f.kind, f.source_layer, f.target_layer) for f in report.findings]
        assert found == expected


@pytest.mark.workers
def test_keras_and_tflite_files_are_read_in_canonical_layouts(
    pool: WorkerPool, keras_cnn_q: dict[str, str], dynamic_range_tflite: str, tmp_path: Path
) -> None:
    """A Keras model (HWIO kernels, read in the tf worker) against its dynamic-range TFLite
    conversion (OHWI int8 filter, dequantized): conv kernel, conv bias and dense kernel pair
    in agreeing layouts, and the dense kernel (float in both, [in, out] vs [out, in] in the
    files) is equal. The conv's kernel and bias differ by more than int8 rounding: the
    TFLiteConverter folded the BatchNorm into them, which tensors alone cannot undo (the
    limit the note states)."""
    source = resolve_source(keras_cnn_q["keras"], None)
    target = resolve_source(dynamic_range_tflite, None)
    findings, note = weights_from_files(pool, source, target, tmp_path)
    assert note.startswith(
        "3 of the source's 8 float tensors paired by content with the target's 4 and compared;"
    ), note
    assert "transposed to the source's layout" not in note, note
    found = [(f.kind, f.source_layer) for f in findings]
    assert found == [("value", "conv/kernel"), ("value", "conv/bias")]
