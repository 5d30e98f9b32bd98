"""`convdiff localize`'s inputs and tools stages: the target on the source's tensors against its
own preprocessing; the target file on its runtime against TVM; the first hop of a run that lost
agreement. Tiny ONNX models, the 16 embedded sample images, the session's workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.localize.flow import LocalizeConfig, localize
from convdiff.commands.run.types import Artifact, Crash, Hop, RunReport
from convdiff.core.progress import Progress
from convdiff.frameworks import package_version
from convdiff.metrics import PairMetrics
from convdiff.runtime.pool import WorkerPool
from tests.tiny.faults import inject

ORT = f"ONNX (onnxruntime) {package_version('onnxruntime')}"
TVM = f"TVM {package_version('apache-tvm')}"


def _localize(pool: WorkerPool, source: Path, target: Path, out: Path, **kw):
    return localize(LocalizeConfig(str(source), str(target), out=out, **kw), Progress(False), pool)


# -- inputs ----------------------------------------------------------------------------------


def test_a_preprocessing_mismatch_is_an_inputs_finding_with_both_pipelines(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path
) -> None:
    report = _localize(
        pool, tiny_onnx, tiny_onnx, tmp_path / "o", stages=("inputs", "tools"),
        preprocess="imagenet", target_preprocess="caffe",
    )  # fmt: skip
    assert [(f.stage, f.kind) for f in report.findings] == [
        ("inputs", "preprocessing"),
        ("tools", "agreement"),
    ]
    assert report.exit_code == 1
    found = report.findings[0]
    source = (
        "imagenet+custom 16x16 center-crop 0.875, (x/255-[0.485,0.456,0.406])/"
        "[0.229,0.224,0.225], RGB, NCHW"
    )
    target = (
        "caffe+custom 16x16 stretch, (x/255-[0.485,0.458,0.4076])/[0.003922,0.003922,0.003922], "
        "BGR, NCHW"
    )
    assert found.summary == (
        "preprocessing costs 50 points of top-1: the target disagrees with the source on 50% "
        f"of 16 images on its own preprocessing ({target}), on 0% on the source's tensors "
        f"({source})"
    )
    assert found.suggestion == (
        "feed the target the source's preprocessing: resize stretch -> center-crop; mean "
        "0.485,0.458,0.4076 -> 0.485,0.456,0.406; std 0.003922,0.003922,0.003922 -> "
        "0.229,0.224,0.225; channels BGR -> RGB"
    )
    assert found.evidence["source_preprocessing"] == source
    assert found.evidence["target_preprocessing"] == target
    assert found.evidence["target_origin"] == "--target-preprocess caffe"
    assert sorted(found.evidence["differing"]) == ["channels", "mean", "resize", "std"]
    assert found.evidence["top1_on_source_tensors"] == 0.0
    assert found.evidence["top1_on_own_preprocessing"] == 50.0
    written = json.loads((tmp_path / "o" / "report.json").read_text())
    assert written["findings"][0]["kind"] == "preprocessing"
    assert written["runs"]["inputs"]["own_preprocessing"]["top1_discrepancy"] == 50.0
    assert sorted(p.name for p in (tmp_path / "o" / "runs").iterdir()) == [
        "x-source.npy", "x-target.npy", "y-source.npy", "y-target-own.npy",
        "y-target-tvm.npz", "y-target.npy",
    ]  # fmt: skip


def test_the_same_preprocessing_is_agreement_and_no_fault(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path
) -> None:
    report = _localize(
        pool, tiny_onnx, tiny_onnx, tmp_path / "o", stages=("inputs",), preprocess="imagenet",
        target_preprocess="imagenet", limit=4,
    )  # fmt: skip
    assert [(f.stage, f.kind) for f in report.findings] == [("inputs", "agreement")]
    assert report.findings[0].summary.startswith(
        "the target's preprocessing is the source's (imagenet+custom 16x16 center-crop 0.875"
    )
    assert report.findings[0].evidence["images"] == 4
    assert report.exit_code == 0


# -- tools: runtime or converter --------------------------------------------------------------


def test_a_wrong_file_on_two_agreeing_runtimes_is_the_converters_fault(
    pool: WorkerPool, base: Path, tmp_path: Path
) -> None:
    target = inject(base, "lost_conv_pads", tmp_path / "lost.onnx")
    report = _localize(pool, base, target, tmp_path / "o", stages=("tools",))
    assert [(f.stage, f.kind) for f in report.findings] == [("tools", "converter")]
    found = report.findings[0]
    assert found.summary == (
        f"{ORT} and {TVM} agree on the target file but it departs from the source (top-1 "
        "6.25%, max abs diff 0.418): the fault is in the file, made by the converter that "
        "wrote the target"
    )
    assert found.evidence["native_vs_tvm"]["top1_discrepancy"] == 0.0
    assert found.evidence["native_vs_tvm"]["max_abs_diff"] < 1e-5
    # TVM ran 4 images: the one that disagrees natively and the 3 whose outputs differ most
    tvm_images = report.runs["tools"]["tvm_images"]
    assert len(tvm_images) == 4
    disagreeing = report.runs["tools"]["native_vs_source"]
    assert disagreeing["images"] == 16 and disagreeing["top1_discrepancy"] == 6.25
    assert found.evidence["tvm_vs_source"]["images"] == 4
    assert found.evidence["tvm_vs_source"]["top1_discrepancy"] == 25.0


# -- tools: which hop of a run lost agreement -------------------------------------------------


def _metrics(top1: float) -> PairMetrics:
    return PairMetrics(16, top1, top1, 1.0, top1 / 100, top1 / 1000)


def _run_report(path: Path, target: Path, second: PairMetrics | None, crash: Crash | None) -> Path:
    hops = [
        Hop(1, "onnx", "keras", "onnx2keras", "0.0.24", {}, Artifact("keras", "/x/m.keras"),
            agreement=_metrics(0.0)),
        Hop(2, "keras", "tflite", "TFLiteConverter", "2.21.0", {"tflite_opt": "dynamic-range"},
            Artifact("tflite", str(target)), agreement=second, crash=crash),
    ]  # fmt: skip
    report = RunReport("tiny", "onnx", "tflite", status="discrepancy", chain=hops)
    report.write(path)
    return path


def test_the_run_reports_first_disagreeing_hop_is_named_with_tool_version_options(
    pool: WorkerPool, base: Path, tmp_path: Path
) -> None:
    target = inject(base, "scaled_weights", tmp_path / "scaled.onnx")
    run_json = _run_report(tmp_path / "report.json", target, _metrics(25.0), None)
    report = _localize(pool, base, target, tmp_path / "o", stages=("tools",), run_report=run_json)
    assert [(f.stage, f.kind) for f in report.findings] == [
        ("tools", "converter"),
        ("tools", "hop"),
    ]
    converter, hop = report.findings
    assert converter.summary.endswith(
        "made by TFLiteConverter 2.21.0 (hop 2, options {'tflite_opt': 'dynamic-range'})"
    )
    assert hop.summary == (
        "hop 2 (keras -> tflite, TFLiteConverter 2.21.0, options {'tflite_opt': "
        "'dynamic-range'}) first lost agreement: top-1 discrepancy 25% against the source (the "
        "hop before: 0%; threshold 0%)"
    )
    assert hop.suggestion == (
        "look at TFLiteConverter 2.21.0 and its options first: every hop before it agrees"
    )


# -- CLI -------------------------------------------------------------------------------------


@pytest.mark.workers
def test_cli_inputs_options_and_bad_run_reports(tiny_onnx: Path, tmp_path: Path) -> None:
    def invoke(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(
            cli, ["localize", str(tiny_onnx), str(tiny_onnx), *args, "--quiet"]
        )
        return result.exit_code, result.stdout, result.stderr

    code, out, err = invoke(
        "--stages", "inputs", "--preprocess", "imagenet", "--target-preprocess", "inception",
        "--limit", "4", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 1, err
    assert out.splitlines()[1].startswith(
        "  [inputs] preprocessing: preprocessing costs 25 points of top-1: the target disagrees "
        "with the source on 25% of 4 images on its own preprocessing (inception+custom 16x16 "
        "stretch, (x/255-[0.5,0.5,0.5])/[0.5,0.5,0.5], RGB, NCHW)"
    )
    assert out.splitlines()[2] == (
        "      fix: feed the target the source's preprocessing: resize stretch -> center-crop; "
        "mean 0.5,0.5,0.5 -> 0.485,0.456,0.406; std 0.5,0.5,0.5 -> 0.229,0.224,0.225"
    )
    code, _, err = invoke("--stages", "inputs,graph", "--run-report", str(tmp_path / "r.json"))
    assert (code, err) == (
        2,
        "error: --run-report is read by the tools stage; add tools to --stages\n",
    )
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = invoke("--stages", "tools", "--run-report", str(tmp_path / "bad.json"))
    assert code == 2
    assert err.startswith(f"error: cannot read the run report {tmp_path / 'bad.json'}: ")


# -- the real-model check's fix: numbered PrimFuncs ----------------------------------------


def _two_clips(path: Path) -> Path:
    """Conv -> Clip(0, 6) -> Conv/2 -> Clip(0, 6), batch dimension symbolic: TVM legalizes each
    Clip into ``call_tir`` PrimFuncs, numbered per shape (``maximum``, ``maximum1``)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "w2": rng.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32),
        "lo": np.array(0, np.float32),
        "hi": np.array(6, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "clips",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_numbered_primfuncs_of_a_second_clip_are_still_read_as_a_clip(
    pool: WorkerPool, tmp_path: Path
) -> None:
    from convdiff.commands.localize.imports import import_via_pool

    graph, info = import_via_pool(pool, "onnx", _two_clips(tmp_path / "c.onnx"), tmp_path / "ir")
    assert graph is not None, info
    assert "cls.maximum1" in (tmp_path / "ir" / "relax.py").read_text()
    assert [layer.op for layer in graph.layers] == [
        "input", "conv2d", "maximum", "minimum", "conv2d", "maximum", "minimum",
        "pool_global_avg",
    ]  # fmt: skip
