"""`convdiff localize` end to end: injected faults, clean and quantized conversions, bad input.

Each fault of :data:`tests.tiny.faults.FAULTS` is edited into a copy of one tiny ONNX model;
localize must name exactly its stage, kind and layer (ONNX node names) and nothing else. TVM
imports run in the session's ``tvm`` worker, conversions in its ``tf`` worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from convdiff.cli import cli
from convdiff.commands.localize.flow import GRAPH_STAGES, LocalizeConfig, localize
from convdiff.core.errors import ConvdiffError
from convdiff.core.progress import Progress
from convdiff.ir import tflite_quant
from convdiff.runtime.pool import WorkerPool
from convdiff.stages.findings import STAGES
from tests.tiny.faults import FAULTS, inject
from tests.tiny.onnx_models import tiny_classifier

REPORT_KEYS = {"stage", "kind", "source_layer", "target_layer", "evidence", "suggestion"}


def _localize(pool: WorkerPool, source: Path | str, target: Path | str, out: Path, **kw):
    kw.setdefault("stages", GRAPH_STAGES)  # the graphs alone (all five: test_activations.py)
    config = LocalizeConfig(str(source), str(target), out=out, **kw)
    return localize(config, Progress(enabled=False), pool)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_injected_fault_is_named_exactly(
    pool: WorkerPool, base: Path, tmp_path: Path, fault: str
) -> None:
    target = inject(base, fault, tmp_path / f"{fault}.onnx")
    report = _localize(pool, base, target, tmp_path / "out")
    found = [(f.stage, f.kind, f.source_layer, f.target_layer) for f in report.findings]
    # the extra class shows in the dense layer's weight and bias alike
    assert found == [FAULTS[fault][1]] * (2 if fault == "extra_class" else 1)
    assert report.exit_code == 1
    assert report.crashes == []
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [set(f) >= REPORT_KEYS for f in written["findings"]] == [True] * len(found)
    assert written["findings"][0]["suggestion"] == report.findings[0].suggestion
    assert f"| {FAULTS[fault][1][1]} |" in (tmp_path / "out" / "report.md").read_text()


def test_the_same_model_gives_no_finding(pool: WorkerPool, base: Path, tmp_path: Path) -> None:
    report = _localize(pool, base, base, tmp_path / "out")
    assert report.findings == [] and report.exit_code == 0
    assert report.alignment["pairs"] == 10 and report.alignment["unmatched"] == 0


def test_a_clean_float_conversion_gives_no_finding(
    pool: WorkerPool, rich_onnx: Path, rich_tflite: str, tmp_path: Path
) -> None:
    """ONNX -> onnx2keras -> TFLiteConverter (float): explicit pads, NHWC transposes and folded
    BatchNorm in the target; none of it is a finding."""
    report = _localize(pool, rich_onnx, rich_tflite, tmp_path / "out")
    assert report.findings == [] and report.exit_code == 0
    assert report.alignment["pairs"] == 10 and report.alignment["unmatched"] == 0


def test_dynamic_range_tflite_has_precision_loss_exactly_on_its_int8_layers(
    pool: WorkerPool, keras_cnn_q: dict[str, str], dynamic_range_tflite: str, tmp_path: Path
) -> None:
    q_path = dynamic_range_tflite
    int8 = tflite_quant.read(q_path).quantized
    assert [(t.name, t.consumers) for t in int8] == [
        ("tiny_cnn_1/conv_1/convolution", ["CONV_2D#0"])
    ]
    report = _localize(pool, keras_cnn_q["keras"], q_path, tmp_path / "out")
    assert [(f.stage, f.kind, f.evidence["param"]) for f in report.findings] == [
        ("weights", "precision", "weight")
    ]
    finding = report.findings[0]
    assert finding.evidence["tensor"] == "tiny_cnn_1/conv_1/convolution"
    assert finding.evidence["grid"] == "int8 in the target file (per-channel scales)"
    # named as the files name them: the TFLite op's output tensor, the Keras layer
    assert "tiny_cnn_1/conv_1/convolution" in finding.target_layer
    assert finding.source_layer == "conv"
    assert 0 < finding.evidence["max_rel"] < 1 / 127
    assert report.imports["source"]["route"] == "keras -> onnx (tf2onnx)"
    assert report.imports["target"]["refused"].startswith("OpNotImplemented")


def test_a_crashing_stage_is_recorded_and_the_others_run(
    pool: WorkerPool, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convdiff.stages import weights

    def broken(ctx: object) -> list:
        raise RuntimeError("boom")

    monkeypatch.setattr(weights, "run", broken)
    target = inject(base, "lost_conv_pads", tmp_path / "t.onnx")
    report = _localize(pool, base, target, tmp_path / "out")
    assert report.crashes == [{"stage": "weights", "message": "RuntimeError: boom"}]
    assert [f.kind for f in report.findings] == ["lost_pads"]
    assert report.exit_code == 3


def test_stages_select_what_runs(pool: WorkerPool, base: Path, tmp_path: Path) -> None:
    target = inject(base, "lost_conv_pads", tmp_path / "t.onnx")
    report = _localize(pool, base, target, tmp_path / "out", stages=("weights", "graph"))
    assert report.stages == ["weights", "graph"]
    assert report.findings == [] and report.exit_code == 0


# -- bad input -------------------------------------------------------------------------------


def _lp_norm_model(path: Path) -> Path:
    """A 10-class model of the base's input whose last op (LpNormalization) TVM's ONNX
    frontend does not implement, though onnxruntime runs it."""
    import onnx
    from onnx import numpy_helper

    w = np.random.default_rng(0).normal(0, 0.05, (768, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("LpNormalization", ["logits"], ["y"], axis=1, p=2),
        ],
        "lpnorm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_bad_inputs_are_refused_with_a_clear_message(
    pool: WorkerPool, base: Path, tmp_path: Path
) -> None:
    small = tiny_classifier(tmp_path / "small.onnx", size=12)
    with pytest.raises(ConvdiffError) as info:
        _localize(pool, base, small, tmp_path / "a")
    assert str(info.value) == (
        "base.onnx and small.onnx take different inputs (per image, logical C,H,W: "
        "3x16x16 vs 3x12x12); localize compares a model with its conversion: give both the "
        "same input size"
    )
    other_task = tiny_classifier(tmp_path / "wide.onnx", size=16, classes=3)
    with pytest.raises(ConvdiffError, match=r"do different tasks \(outputs of \[10\] vs \[3\]"):
        _localize(pool, base, other_task, tmp_path / "b")
    # TVM cannot import the target: the stages that only run the models still report, and
    # the weights stage reads the files (an unrelated lp.onnx: nothing pairs, nothing found)
    lp = _lp_norm_model(tmp_path / "lp.onnx")
    report = _localize(pool, base, lp, tmp_path / "c", stages=STAGES, preprocess="imagenet")
    assert report.error.startswith(
        "TVM cannot import the target lp.onnx: unsupported op LpNormalization (TVM ONNX frontend; "
    )
    assert report.error.endswith(
        "; the weights, hyperparams and graph stages need both models in TVM Relax"
    )
    assert report.exit_code == 2
    assert report.notes[:3] == [
        "weights: read from the model files because TVM cannot import the target lp.onnx; "
        "hyperparams and graph were not run (0 of the source's 12 float tensors paired by "
        "content with the target's 1 and compared; tensors under 8 values are not compared, "
        "and BatchNorm is not folded (a per-channel scale of a conv may be a BatchNorm the "
        "converter folded into it))",
        "hyperparams: not run (TVM cannot import the target lp.onnx)",
        "graph: not run (TVM cannot import the target lp.onnx)",
    ]
    assert sorted(report.runs) == ["inputs", "tools"]
    assert report.runs["inputs"]["same_tensors"]["images"] == 16
    kinds = [(f.stage, f.kind) for f in report.findings]
    assert ("inputs", "agreement") in kinds and all(s in ("inputs", "tools") for s, _ in kinds)
    written = json.loads((tmp_path / "c" / "report.json").read_text())
    assert written["error"] == report.error


# -- CLI -------------------------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["localize", *args, "--quiet"])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.workers
def test_cli_exit_codes_and_summary(base: Path, tmp_path: Path) -> None:
    target = inject(base, "bn_epsilon", tmp_path / "eps.onnx")
    graphs = ("--stages", "weights,hyperparams,graph")
    code, out, err = invoke(str(base), str(target), *graphs, "--out", str(tmp_path / "o1"))
    assert code == 1, err
    assert out.splitlines()[:3] == [
        "localize base.onnx (onnx) -> eps.onnx (onnx): 1 finding(s), stages weights, "
        "hyperparams, graph",
        "  [hyperparams] epsilon at bn1 -> bn1: batch_norm (folded into conv2d) epsilon differs "
        "(source 0.001, target 1e-05)",
        "      fix: set the target BatchNorm's epsilon to 0.001 (its folded weights then equal "
        "the source's)",
    ]
    code, out, err = invoke(str(base), str(base), *graphs, "--out", str(tmp_path / "o2"))
    assert (code, err) == (0, "")
    assert out.splitlines()[0].endswith(": 0 finding(s), stages weights, hyperparams, graph")
    assert out.splitlines()[1] == (
        "  note: graph: no activation evidence (the models were not run; add inputs or tools "
        "to --stages)"
    )
    code, _, err = invoke(str(base), str(target), "--stages", "weights,bogus")
    assert code == 2
    assert err == (
        "error: unknown stage 'bogus'; use some of: inputs, tools, weights, hyperparams, graph\n"
    )
    code, _, err = invoke(str(base), str(tmp_path / "missing.onnx"))
    assert code == 2
    assert err == f"error: model file {tmp_path / 'missing.onnx'} does not exist; check the path\n"
