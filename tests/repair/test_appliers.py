"""Patch appliers: ONNX edits checked value by value and by onnxruntime against the unfaulted
model; TFLite int8 weights set back to float checked by LiteRT (in its worker) against the
float conversion; refusals (another model, overwriting the input); byte-identical reruns; the
Keras and torch appliers' tensors and the edits they cannot express."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from convdiff.commands.localize.flow import LocalizeConfig
from convdiff.commands.repair.flow import RepairConfig, repair
from convdiff.core.errors import ConvdiffError
from convdiff.core.progress import Progress
from convdiff.ir import tflite_quant
from convdiff.repair import Edit, Patch, apply_edits, apply_patch, read_tensor
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import convert, infer, ok
from tests.tiny.faults import inject
from tests.tiny.repair_models import clip_opset10, dequantized_weight, matmul_add, shared_weight


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _images(shape: tuple[int, ...] = (1, 3, 16, 16), count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(count)]


def _checked(path: Path) -> onnx.ModelProto:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)  # with strict shape inference
    return model


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _attrs(model: onnx.ModelProto, name: str) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in _node(model, name).attribute}


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


# -- ONNX: each edit kind gives exactly the value asked ----------------------------------------


def test_onnx_each_attribute_kind(base: Path, tmp_path: Path) -> None:
    edits = [
        Edit("set_attr", "pool1", "pads", [0, 0, 1, 1]),
        Edit("set_attr", "conv1", "strides", [1, 1]),
        Edit("set_attr", "conv2", "dilation", [2, 2]),
        Edit("set_attr", "conv2", "pads", [2, 2, 2, 2]),
        Edit("set_attr", "avgpool", "kernel", [2, 2]),
        Edit("set_attr", "bn1", "epsilon", 0.01),
        Edit("set_attr", "pool1", "ceil_mode", True),
        Edit("set_attr", "avgpool", "count_include_pad", 1),
        Edit("set_attr", "relu6", "clip_min", -1.0),
        Edit("set_attr", "relu6", "clip_max", 4.0),
    ]
    result = apply_edits("onnx", base, edits, {}, tmp_path / "out.onnx")
    assert result.applied == edits and result.skipped == []
    model = _checked(result.out)
    assert _attrs(model, "pool1") == {
        "kernel_shape": [2, 2],
        "strides": [2, 2],
        "pads": [0, 0, 1, 1],
        "ceil_mode": 1,
    }
    assert _attrs(model, "conv1") == {"pads": [1, 1, 1, 1], "strides": [1, 1]}
    assert _attrs(model, "conv2") == {"pads": [2, 2, 2, 2], "dilations": [2, 2]}
    assert _attrs(model, "avgpool")["kernel_shape"] == [2, 2]
    assert _attrs(model, "avgpool")["count_include_pad"] == 1
    assert _attrs(model, "bn1")["epsilon"] == pytest.approx(0.01)
    clip = _node(model, "relu6")
    assert _init(model, clip.input[1]) == -1.0 and _init(model, clip.input[2]) == 4.0
    assert list(clip.input) == ["bn", "lo", "hi"]  # their own initializers: changed in place
    _run(result.out, _images()[0])  # loads and runs


def test_onnx_groups_with_its_weight(base: Path, tmp_path: Path) -> None:
    w = np.arange(8 * 4 * 3 * 3, dtype=np.float32).reshape(8, 4, 3, 3) / 100
    edits = [
        Edit("set_attr", "conv2", "groups", 2),
        Edit("set_tensor", "conv2", "weight", "w"),
    ]
    result = apply_edits("onnx", base, edits, {"w": w}, tmp_path / "out.onnx")
    model = _checked(result.out)
    assert _attrs(model, "conv2")["group"] == 2
    np.testing.assert_array_equal(_init(model, "w2"), w)


def test_onnx_pads_clear_auto_pad_and_weight_through_dequantize(tmp_path: Path) -> None:
    path = dequantized_weight(tmp_path / "dq.onnx")
    stored = read_tensor("onnx", path, "conv", "weight")
    wq = _init(onnx.load(path), "wq").astype(np.float32)
    scale = np.array([0.01, 0.02, 0.03, 0.04], np.float32).reshape(4, 1, 1, 1)
    np.testing.assert_allclose(stored, wq * scale, rtol=1e-6)
    new = np.full((4, 3, 3, 3), 0.5, np.float32)
    edits = [
        Edit("set_attr", "conv", "pads", [1, 1, 1, 1]),
        Edit("set_tensor", "conv", "weight", "w"),
    ]
    result = apply_edits("onnx", path, edits, {"w": new}, tmp_path / "out.onnx")
    model = _checked(result.out)
    assert _attrs(model, "conv") == {"auto_pad": b"NOTSET", "pads": [1, 1, 1, 1]}
    conv = _node(model, "conv")
    assert conv.input[1] == "conv.weight"
    np.testing.assert_array_equal(_init(model, "conv.weight"), new)
    assert [n.name for n in model.graph.node] == ["conv", "ident", "relu", "drop"]  # dq pruned
    assert {i.name for i in model.graph.initializer} == {"b", "conv.weight"}
    np.testing.assert_array_equal(read_tensor("onnx", result.out, "conv", "weight"), new)


def test_onnx_missing_bias_gets_a_new_initializer(base: Path, tmp_path: Path) -> None:
    faulty = inject(base, "dropped_bias", tmp_path / "f.onnx")
    assert read_tensor("onnx", faulty, "conv2", "bias") is None
    bias = np.linspace(-1, 1, 8, dtype=np.float32)
    edits = [Edit("set_tensor", "conv2", "bias", "b")]
    result = apply_edits("onnx", faulty, edits, {"b": bias}, tmp_path / "out.onnx")
    model = _checked(result.out)
    assert list(_node(model, "conv2").input) == ["mp", "w2", "conv2.bias"]
    np.testing.assert_array_equal(_init(model, "conv2.bias"), bias)


def test_onnx_gemm_shape_change_updates_the_declared_output(base: Path, tmp_path: Path) -> None:
    w = np.ones((4, 8), np.float32)
    edits = [Edit("set_tensor", "fc", "weight", "w"), Edit("set_tensor", "fc", "bias", "b")]
    tensors = {"w": w, "b": np.zeros(4, np.float32)}
    result = apply_edits("onnx", base, edits, tensors, tmp_path / "out.onnx")
    model = _checked(result.out)
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 4]
    assert _run(result.out, _images()[0]).shape == (1, 4)


def test_onnx_shared_initializer_is_not_changed_in_place(tmp_path: Path) -> None:
    path = shared_weight(tmp_path / "shared.onnx")
    before = _init(onnx.load(path), "w")
    new = np.zeros((3, 3, 3, 3), np.float32)
    result = apply_edits(
        "onnx", path, [Edit("set_tensor", "convA", "weight", "w")], {"w": new}, tmp_path / "o.onnx"
    )
    model = _checked(result.out)
    assert list(_node(model, "convA").input) == ["input", "convA.weight"]
    assert list(_node(model, "convB").input) == ["a", "w"]
    np.testing.assert_array_equal(_init(model, "w"), before)
    np.testing.assert_array_equal(_init(model, "convA.weight"), new)


def test_onnx_matmul_bias_is_its_add_constant(tmp_path: Path) -> None:
    path = matmul_add(tmp_path / "mm.onnx")
    assert read_tensor("onnx", path, "dense", "bias").shape == (5,)
    edits = [Edit("set_tensor", "dense", "bias", "b"), Edit("set_tensor", "dense", "weight", "w")]
    tensors = {"b": np.arange(5, dtype=np.float32), "w": np.zeros((12, 5), np.float32)}
    result = apply_edits("onnx", path, edits, tensors, tmp_path / "out.onnx")
    _checked(result.out)
    x = _images((1, 3, 2, 2))[0]
    np.testing.assert_array_equal(_run(result.out, x), [np.arange(5, dtype=np.float32)])


def test_onnx_clip_bounds_before_opset_11_are_attributes(tmp_path: Path) -> None:
    path = clip_opset10(tmp_path / "clip.onnx")
    edits = [Edit("set_attr", "clip", "clip_max", 6.0), Edit("set_attr", "clip", "clip_min", -1)]
    result = apply_edits("onnx", path, edits, {}, tmp_path / "out.onnx")
    model = _checked(result.out)
    assert _attrs(model, "clip") == {"min": -1.0, "max": 6.0}
    x = np.full((1, 3, 4, 4), 10.0, np.float32)
    assert _run(result.out, x).max() == 6.0


def test_onnx_remove_node_rewires_consumers(tmp_path: Path) -> None:
    path = dequantized_weight(tmp_path / "dq.onnx")
    edits = [Edit("remove_node", "ident"), Edit("remove_node", "drop")]
    result = apply_edits("onnx", path, edits, {}, tmp_path / "out.onnx")
    model = _checked(result.out)
    assert [(n.name, list(n.input), list(n.output)) for n in model.graph.node] == [
        ("dq", ["wq", "scale", "zero"], ["w"]),
        ("conv", ["input", "w", "b"], ["c"]),
        ("relu", ["c"], ["out"]),  # the graph output keeps its name
    ]
    x = _images((1, 3, 8, 8))[0]
    np.testing.assert_array_equal(_run(result.out, x), _run(path, x))


def test_onnx_unsupported_edits_are_skipped_with_reasons(base: Path, tmp_path: Path) -> None:
    edits = [
        Edit("set_attr", "relu2", "activation", "relu6"),
        Edit("set_attr", "bn1", "strides", [2, 2]),
        Edit("set_tensor", "nowhere", "weight", "w"),
        Edit("preprocessing", "", "mean", [0.5, 0.5, 0.5], [0.485, 0.456, 0.406]),
    ]
    result = apply_edits("onnx", base, edits, {"w": np.zeros(1)}, tmp_path / "out.onnx")
    assert result.applied == []
    assert [s.reason for s in result.skipped] == [
        "the ONNX applier does not set 'activation' (an ONNX activation is a node)",
        "BatchNormalization 'bn1' has no strides (strides) attribute",
        "no node named 'nowhere' in the file",
        "preprocessing belongs in your input pipeline; not written into the model",
    ]
    assert result.out.read_bytes() == onnx.load(base).SerializeToString()
    clip = clip_opset10(tmp_path / "clip.onnx")
    result = apply_edits("onnx", clip, [Edit("remove_node", "clip")], {}, tmp_path / "c.onnx")
    assert [s.reason for s in result.skipped] == [
        "'clip' joins a graph input or output to the graph's output"
    ]


# -- ONNX: the faulty models repaired give the base model's outputs ---------------------------

FIXES = {
    "lost_conv_pads": [("set_attr", "conv2", "pads", [1, 1, 1, 1])],
    "maxpool_pads": [("set_attr", "pool1", "pads", [0, 0, 0, 0])],
    "maxpool_ceil_mode": [("set_attr", "pool1", "ceil_mode", 0)],
    "avgpool_count_include_pad": [("set_attr", "avgpool", "count_include_pad", 0)],
    "bn_epsilon": [("set_attr", "bn1", "epsilon", 1e-3)],
    "relu6_bounds": [("set_attr", "relu6", "clip_max", 6.0)],
    "weights_int8": [("set_tensor", "conv2", "weight", "conv2.weight")],
    "transposed_weights": [("set_tensor", "conv2", "weight", "conv2.weight")],
    "dropped_bias": [("set_tensor", "conv2", "bias", "conv2.bias")],
    "scaled_weights": [("set_tensor", "fc", "weight", "fc.weight")],
    "extra_class": [
        ("set_tensor", "fc", "weight", "fc.weight"),
        ("set_tensor", "fc", "bias", "fc.bias"),
    ],
}


@pytest.mark.parametrize("fault", list(FIXES))
def test_repaired_faults_compute_the_base_model(base: Path, tmp_path: Path, fault: str) -> None:
    faulty = inject(base, fault, tmp_path / "faulty.onnx")
    edits = [Edit(*e, stage="test", kind=fault) for e in FIXES[fault]]
    tensors = {
        f"{e.layer}.{e.field}": read_tensor("onnx", base, e.layer, e.field)
        for e in edits
        if e.action == "set_tensor"
    }
    patch = Patch.for_files(faulty, "onnx", base, edits, tensors)
    result = apply_patch(patch.save(tmp_path / "repair.json"), faulty, tmp_path / "fixed.onnx")
    assert result.applied == edits and result.skipped == []
    _checked(result.out)
    for x in _images():
        np.testing.assert_allclose(_run(result.out, x), _run(base, x), atol=1e-6)


def test_the_appliers_import_no_framework() -> None:
    """They run in the orchestrator: the flatbuffer schema module must not pull TensorFlow."""
    code = (
        "import sys, convdiff.repair.appliers.apply, convdiff.repair.appliers.onnx, "
        "convdiff.repair.appliers.tflite\n"
        "from ai_edge_litert import schema_py_generated\n"
        "print(sorted(m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- refusals and determinism -----------------------------------------------------------------


def test_applying_twice_gives_identical_bytes(base: Path, tmp_path: Path) -> None:
    faulty = inject(base, "extra_class", tmp_path / "faulty.onnx")
    tensors = {k: read_tensor("onnx", base, "fc", k) for k in ("weight", "bias")}
    edits = [Edit("set_tensor", "fc", k, k) for k in tensors]
    edits.append(Edit("set_attr", "conv2", "pads", [0, 0, 0, 0]))
    patch = Patch.for_files(faulty, "onnx", base, edits, tensors).save(tmp_path / "p.json")
    first = apply_patch(patch, faulty, tmp_path / "a.onnx").out.read_bytes()
    second = apply_patch(patch, faulty, tmp_path / "b.onnx").out.read_bytes()
    assert first == second
    third = apply_patch(patch, faulty, tmp_path / "a.onnx").out.read_bytes()  # rewrite
    assert third == first


def test_a_patch_for_another_model_is_refused(base: Path, tmp_path: Path) -> None:
    other = inject(base, "bn_epsilon", tmp_path / "other.onnx")
    patch = Patch.for_files(base, "onnx", base, [Edit("set_attr", "bn1", "epsilon", 0.1)])
    with pytest.raises(ConvdiffError) as err:
        apply_patch((patch, {}), other, tmp_path / "out.onnx")
    sha = patch.target["sha256"]
    assert str(err.value.problem) == (
        f"the patch was written for base.onnx (sha256 {sha[:12]}...), not {other} "
        f"(sha256 {Patch.for_files(other, 'onnx', base).target['sha256'][:12]}...)"
    )
    assert not (tmp_path / "out.onnx").exists()


def test_the_input_is_never_overwritten(base: Path, tmp_path: Path) -> None:
    target = inject(base, "bn_epsilon", tmp_path / "t.onnx")
    before = target.read_bytes()
    patch = Patch.for_files(target, "onnx", base, [Edit("set_attr", "bn1", "epsilon", 0.1)])
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    for out in (target, tmp_path / "." / "t.onnx", link):
        with pytest.raises(ConvdiffError, match="refusing to overwrite the input model"):
            apply_patch((patch, {}), target, out)
    assert target.read_bytes() == before


# -- TFLite -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_pair(
    pool: WorkerPool,
    keras_cnn_q: dict[str, str],
    dynamic_range_tflite: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The tiny Keras CNN with 48 filters (its conv kernel is quantized by dynamic range),
    converted three times: float and float16 here, dynamic-range once a session."""
    out = tmp_path_factory.mktemp("tflite-repair")
    paths = {"inputs": keras_cnn_q["inputs"], "keras": keras_cnn_q["keras"]}
    paths["dynamic-range"] = dynamic_range_tflite
    for opt in ("none", "float16"):
        paths[opt] = convert(
            pool, "keras", "tflite", keras_cnn_q["keras"], out / opt, tflite_opt=opt
        )
    return paths


def _litert(pool: WorkerPool, path: Path | str, inputs: str) -> np.ndarray:
    return infer(pool, "tflite", path, inputs, Path(path).with_suffix(".y.npz"), layout="NHWC")


def _first(path: Path | str, kind: str) -> str:
    """The name convdiff gives the first op of ``kind``: its first output tensor's."""
    model = tflite_quant.unpack(path)
    graph = model.subgraphs[0]
    op = tflite_quant.ops_of(model, kind)[0]
    return graph.tensors[int(op.outputs[0])].name.decode()


def test_tflite_int8_weight_set_to_float_computes_the_float_model(
    pool: WorkerPool, tflite_pair: dict[str, str], tmp_path: Path
) -> None:
    quant, floating = Path(tflite_pair["dynamic-range"]), Path(tflite_pair["none"])
    q_layer, f_layer = _first(quant, "CONV_2D"), _first(floating, "CONV_2D")
    (int8,) = tflite_quant.read(quant).quantized
    stored = read_tensor("tflite", quant, q_layer, "weight")
    np.testing.assert_array_equal(stored, int8.dequantized())
    weight = read_tensor("tflite", floating, f_layer, "weight")
    assert weight.shape == (48, 3, 3, 3) and weight.dtype == np.float32  # OHWI
    assert 0 < np.abs(weight - stored).max() <= np.max(int8.scales) / 2 + 1e-7
    np.testing.assert_array_equal(
        read_tensor("tflite", quant, q_layer, "bias"),
        read_tensor("tflite", floating, f_layer, "bias"),
    )

    edit = Edit("set_tensor", q_layer, "weight", "conv.weight", stage="weights", kind="precision")
    patch = Patch.for_files(quant, "tflite", Path(tflite_pair["keras"]), [edit])
    patch.tensors = {"conv.weight": weight}
    path = patch.save(tmp_path / "repair.json")
    first = apply_patch(path, quant, tmp_path / "a.tflite")
    second = apply_patch(path, quant, tmp_path / "b.tflite")
    assert first.applied == [edit] and first.skipped == []
    assert first.out.read_bytes() == second.out.read_bytes()
    assert tflite_quant.read(first.out).quantized == []
    np.testing.assert_array_equal(read_tensor("tflite", first.out, q_layer, "weight"), weight)

    inputs = tflite_pair["inputs"]
    y_float = _litert(pool, floating, inputs)
    assert np.abs(_litert(pool, quant, inputs) - y_float).max() > 1e-5  # the fault shows
    np.testing.assert_allclose(_litert(pool, first.out, inputs), y_float, atol=1e-5)


def test_tflite_attributes(pool: WorkerPool, tflite_pair: dict[str, str], tmp_path: Path) -> None:
    from ai_edge_litert import schema_py_generated as schema

    floating = Path(tflite_pair["none"])
    layer = _first(floating, "CONV_2D")
    options = tflite_quant.ops_of(tflite_quant.unpack(floating), "CONV_2D")[0].builtinOptions
    assert options.padding == schema.Padding.SAME  # Keras padding="same", 3x3 on 8x8
    assert options.fusedActivationFunction == schema.ActivationFunctionType.RELU
    edits = [
        Edit("set_attr", layer, "activation", "none"),
        Edit("set_attr", layer, "pads", [1, 1, 1, 1]),  # what SAME gives: kept
        Edit("set_attr", layer, "dilation", [2, 2]),
        Edit("set_attr", layer, "strides", 1),
        Edit("set_attr", layer, "kernel", [2, 2]),
        Edit("set_attr", layer, "epsilon", 1e-3),
        Edit("set_tensor", "nowhere", "weight", "w"),
    ]
    result = apply_edits("tflite", floating, edits, {"w": np.zeros(1)}, tmp_path / "a.tflite")
    assert result.applied == edits[:4]
    assert [s.reason for s in result.skipped] == [
        "TFLite CONV_2D has no kernel attribute convdiff can set",
        "TFLite CONV_2D has no epsilon attribute convdiff can set",
        "no op whose first output is named 'nowhere' in the file",
    ]
    options = tflite_quant.ops_of(tflite_quant.unpack(result.out), "CONV_2D")[0].builtinOptions
    assert options.fusedActivationFunction == schema.ActivationFunctionType.NONE
    assert (options.dilationHFactor, options.dilationWFactor) == (2, 2)
    assert (options.strideH, options.strideW, options.padding) == (1, 1, schema.Padding.SAME)

    valid = apply_edits(
        "tflite",
        floating,
        [Edit("set_attr", layer, "pads", [0, 0, 0, 0])],
        {},
        tmp_path / "v.tflite",
    )
    options = tflite_quant.ops_of(tflite_quant.unpack(valid.out), "CONV_2D")[0].builtinOptions
    assert options.padding == schema.Padding.VALID
    inputs = tflite_pair["inputs"]
    y = _litert(pool, floating, inputs)
    for out in (result.out, valid.out):  # the edited files load and run in LiteRT
        y_edited = _litert(pool, out, inputs)
        assert y_edited.shape == y.shape == (4, 5)
        assert np.abs(y_edited - y).max() > 1e-4


def test_tflite_weights_behind_dequantize_get_new_float_tensors(
    pool: WorkerPool, tflite_pair: dict[str, str], tmp_path: Path
) -> None:
    """float16 conversion: every weight and bias is float16, upcast by a DEQUANTIZE op."""
    half, floating = Path(tflite_pair["float16"]), Path(tflite_pair["none"])
    edits, tensors = [], {}
    for kind in ("CONV_2D", "FULLY_CONNECTED"):
        layer, f_layer = _first(half, kind), _first(floating, kind)
        for field in ("weight", "bias"):
            value = read_tensor("tflite", floating, f_layer, field)
            stored = read_tensor("tflite", half, layer, field)  # through DEQUANTIZE
            np.testing.assert_array_equal(stored, value.astype(np.float16).astype(np.float32))
            tensors[f"{kind}.{field}"] = value
            edits.append(Edit("set_tensor", layer, field, f"{kind}.{field}"))
    assert len(tflite_quant.ops_of(tflite_quant.unpack(half), "DEQUANTIZE")) == 4
    result = apply_edits("tflite", half, edits, tensors, tmp_path / "a.tflite")
    assert result.applied == edits
    model = tflite_quant.unpack(result.out)
    assert tflite_quant.ops_of(model, "DEQUANTIZE") == []  # orphaned: removed
    conv = tflite_quant.ops_of(model, "CONV_2D")[0]
    new = model.subgraphs[0].tensors[int(conv.inputs[1])]
    assert new.name.decode() == f"{edits[0].layer}/weight" and new.type == 0  # FLOAT32
    for edit in edits:
        np.testing.assert_array_equal(
            read_tensor("tflite", result.out, edit.layer, edit.field), tensors[edit.value]
        )
    inputs = tflite_pair["inputs"]
    y_float = _litert(pool, floating, inputs)
    assert np.abs(_litert(pool, half, inputs) - y_float).max() > 1e-5  # the fault shows
    np.testing.assert_allclose(_litert(pool, result.out, inputs), y_float, atol=1e-5)


def test_tflite_shared_buffer_is_not_edited_in_place(tflite_pair: dict[str, str]) -> None:
    model = tflite_quant.unpack(tflite_pair["none"])
    graph = model.subgraphs[0]
    conv = tflite_quant.ops_of(model, "CONV_2D")[0]
    w_index, b_index = int(conv.inputs[1]), int(conv.inputs[2])
    graph.tensors[b_index].buffer = graph.tensors[w_index].buffer  # as a deduplicated file has
    buffers, shared = len(model.buffers), graph.tensors[w_index].buffer
    before = np.array(model.buffers[shared].data, copy=True)
    tflite_quant.set_float32(model, w_index, np.zeros((48, 3, 3, 3), np.float32))
    assert graph.tensors[w_index].buffer == buffers and len(model.buffers) == buffers + 1
    assert graph.tensors[b_index].buffer == shared
    np.testing.assert_array_equal(model.buffers[shared].data, before)


def _numpy_tiny_cnn(x: np.ndarray, path: Path, pads: list[int]) -> np.ndarray:
    """The float tiny CNN file's computation in numpy: conv (OHWI, explicit pads, fused
    ReLU) -> mean -> dense -> softmax, with the weights read from the file."""
    conv, dense = _first(path, "CONV_2D"), _first(path, "FULLY_CONNECTED")
    w, b = (read_tensor("tflite", path, conv, f).astype(np.float64) for f in ("weight", "bias"))
    fw, fb = (read_tensor("tflite", path, dense, f).astype(np.float64) for f in ("weight", "bias"))
    top, left, bottom, right = pads
    padded = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    h, wd = padded.shape[1] - 2, padded.shape[2] - 2
    patches = np.stack(
        [padded[:, i : i + h, j : j + wd, :] for i in range(3) for j in range(3)], axis=3
    )  # n, h, w, 9, c
    y = np.einsum("nhwkc,okc->nhwo", patches, w.reshape(w.shape[0], 9, -1)) + b
    logits = np.maximum(y, 0).mean(axis=(1, 2)) @ fw.T + fb
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_tflite_asymmetric_pads_insert_a_pad_op(
    pool: WorkerPool, tflite_pair: dict[str, str], tmp_path: Path
) -> None:
    from ai_edge_litert import schema_py_generated as schema

    floating = Path(tflite_pair["none"])
    layer = _first(floating, "CONV_2D")
    with np.load(tflite_pair["inputs"]) as data:
        x = data["x"]
    np.testing.assert_allclose(  # the reference reproduces the file as converted (SAME)
        _numpy_tiny_cnn(x, floating, [1, 1, 1, 1]), _litert(pool, floating, tflite_pair["inputs"]),
        atol=1e-5,
    )  # fmt: skip
    edit = Edit("set_attr", layer, "pads", [2, 0, 0, 1])
    result = apply_edits("tflite", floating, [edit], {}, tmp_path / "pad.tflite")
    assert result.applied == [edit] and result.skipped == []
    model = tflite_quant.unpack(result.out)
    kinds = [tflite_quant.op_kind(model, op) for op in model.subgraphs[0].operators]
    assert kinds == ["PAD", "CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    assert tflite_quant.ops_of(model, "CONV_2D")[0].builtinOptions.padding == schema.Padding.VALID
    y = _litert(pool, result.out, tflite_pair["inputs"])
    np.testing.assert_allclose(y, _numpy_tiny_cnn(x, floating, [2, 0, 0, 1]), atol=1e-5)
    again = apply_edits("tflite", floating, [edit], {}, tmp_path / "pad2.tflite")
    assert again.out.read_bytes() == result.out.read_bytes()


def test_tflite_missing_bias_and_a_wider_dense_layer(
    pool: WorkerPool, tflite_pair: dict[str, str], tmp_path: Path
) -> None:
    floating = Path(tflite_pair["none"])
    dense = _first(floating, "FULLY_CONNECTED")
    bias = read_tensor("tflite", floating, dense, "bias")
    model = tflite_quant.unpack(floating)
    fc = tflite_quant.ops_of(model, "FULLY_CONNECTED")[0]
    fc.inputs = np.asarray([*fc.inputs[:2], -1], dtype=np.int32)  # the bias dropped
    no_bias = tmp_path / "no_bias.tflite"
    no_bias.write_bytes(tflite_quant.pack(model))
    assert read_tensor("tflite", no_bias, dense, "bias") is None
    edit = Edit("set_tensor", dense, "bias", "b")
    fixed = apply_edits("tflite", no_bias, [edit], {"b": bias}, tmp_path / "fixed.tflite")
    assert fixed.applied == [edit]
    inputs = tflite_pair["inputs"]
    y = _litert(pool, floating, inputs)
    assert np.abs(_litert(pool, no_bias, inputs) - y).max() > 1e-3
    np.testing.assert_allclose(_litert(pool, fixed.out, inputs), y, atol=1e-6)

    weight = read_tensor("tflite", floating, dense, "weight")
    wider = {"w": np.concatenate([weight, weight[:1]]), "b": np.append(bias, bias[0])}
    edits = [Edit("set_tensor", dense, "weight", "w"), Edit("set_tensor", dense, "bias", "b")]
    result = apply_edits("tflite", floating, edits, wider, tmp_path / "wide.tflite")
    y_wide = _litert(pool, result.out, inputs)
    assert y_wide.shape == (4, 6)
    # the sixth class repeats the first: the softmax over 6 is the one over 5, renormalized
    np.testing.assert_allclose(
        y_wide[:, :5] / y_wide[:, :5].sum(axis=1, keepdims=True), y, atol=1e-6
    )
    np.testing.assert_allclose(y_wide[:, 5], y_wide[:, 0], atol=1e-7)


def test_tflite_lost_fused_activation_is_repaired_end_to_end(
    pool: WorkerPool, tflite_pair: dict[str, str], tmp_path: Path
) -> None:
    from ai_edge_litert import schema_py_generated as schema

    floating = Path(tflite_pair["none"])
    model = tflite_quant.unpack(floating)
    conv = tflite_quant.ops_of(model, "CONV_2D")[0]
    assert conv.builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU
    conv.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.NONE
    faulty = tmp_path / "no_relu.tflite"
    faulty.write_bytes(tflite_quant.pack(model))

    config = RepairConfig(
        LocalizeConfig(tflite_pair["keras"], str(faulty), preprocess="imagenet"),
        tmp_path / "fixed.tflite",
        tmp_path / "work",
    )
    report = repair(config, Progress(enabled=False), pool)
    assert report.status == "repaired" and report.exit_code == 0
    assert [(e["action"], e["field"]) for e in report.verify["kept"]] == [("insert_node", "relu")]
    assert report.verify["after"]["max_abs_diff"] <= 1e-6
    fixed = tflite_quant.ops_of(tflite_quant.unpack(tmp_path / "fixed.tflite"), "CONV_2D")[0]
    assert fixed.builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU


# -- Keras and torch: the appliers run in the frameworks' own workers ---------------------------


def test_read_tensor_gives_the_frameworks_own_layouts(
    pool: WorkerPool, keras_cnn: dict[str, str], torch_source: Path
) -> None:
    keras_source = Path(keras_cnn["keras"])
    assert read_tensor("keras", keras_source, "conv", "weight", pool).shape == (3, 3, 3, 4)  # HWIO
    assert read_tensor("keras", keras_source, "dense", "weight", pool).shape == (4, 5)  # [in, out]
    assert read_tensor("keras", keras_source, "bn", "bias", pool).shape == (4,)  # beta
    assert read_tensor("keras", keras_source, "relu", "weight", pool) is None
    assert read_tensor("torch", torch_source, "conv1", "weight", pool).shape == (8, 3, 3, 3)
    assert read_tensor("torch", torch_source, "fc", "weight", pool).shape == (5, 8)
    assert read_tensor("torch", torch_source, "pool", "weight", pool) is None


def test_edits_a_framework_cannot_express_are_skipped_with_reasons(
    pool: WorkerPool, keras_cnn: dict[str, str], torch_source: Path, tmp_path: Path
) -> None:
    keras_source = Path(keras_cnn["keras"])
    keras_edits = [
        Edit("set_attr", "conv", "pads", [0, 0, 2, 2]),
        Edit("set_attr", "conv", "strides", [2, 2]),
        Edit("remove_node", "relu"),
        Edit("set_attr", "nowhere", "epsilon", 0.1),
    ]
    result = apply_edits("keras", keras_source, keras_edits, {}, tmp_path / "k.keras", pool)
    assert [e.field for e in result.applied] == ["strides"]
    reasons = [s.reason for s in result.skipped]
    assert "neither 'same' nor 'valid'" in reasons[0]
    assert reasons[1:] == [
        "removing a layer is not written for Keras models",
        "no layer named 'nowhere' in the model",
    ]
    torch_edits = [
        Edit("set_attr", "conv2", "pads", [0, 0, 1, 1]),
        Edit("set_attr", "pool", "strides", [1, 1]),
        Edit("set_tensor", "fc", "weight", "w"),
        Edit("remove_node", "relu2"),
    ]
    tensors = {"w": np.zeros((5, 9), np.float32)}
    result = apply_edits("torch", torch_source, torch_edits, tensors, tmp_path / "t.pt2", pool)
    assert [f"{e.layer}.{e.field}" for e in result.applied] == ["pool.strides", "relu2."]
    ops = ok(client.torch_file_ops(pool, result.out))
    assert [name for _, name, _ in ops] == ["conv1", "bn1", "relu", "pool", "conv2", "gap", "fc"]
    assert [s.reason.split(":")[0] for s in result.skipped] == [
        "torch pads both sides alike; [0, 0, 1, 1] needs an explicit F.pad",
        "fc.weight has shape [5, 8], the patch [5, 9]",
    ]
    with pytest.raises(ConvdiffError, match="refusing to overwrite"):
        apply_edits("torch", torch_source, [], {}, torch_source, pool)
    with pytest.raises(ConvdiffError, match="writes .keras files"):
        apply_edits("keras", keras_source, [], {}, tmp_path / "k.h5", pool)
