"""onnx -> onnx with onnxruntime's quantizers (convdiff.converters.ort_quantize), for real.

The converter runs in an onnx worker (``quant_pre_process``'s symbolic shape inference imports
``onnxruntime.tools``, which imports torch when it is installed: not in the test process) on
the tiny ONNX classifier (Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm ->
Softmax); the node types are read from the file it writes. The calibration reader and the
chains need no worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convdiff.commands.run.flow import run
from convdiff.commands.run.types import RunConfig
from convdiff.converters import edge, find_chain
from convdiff.converters.ort_quantize import CalibrationImages
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import ConvertOptions
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import ok
from tests.tiny.onnx_models import save_graph

# what onnxruntime 1.32 writes for tiny_classifier (after quant_pre_process)
DYNAMIC_OPS = [
    "Reshape",  # the conv bias to [1, C, 1, 1], for the Add after ConvInteger
    "DynamicQuantizeLinear",
    "Mul",
    "ConvInteger",
    "Cast",
    "Mul",
    "Add",
    "Relu",
    "GlobalAveragePool",
    "Flatten",
    "DynamicQuantizeLinear",
    "Mul",
    "MatMulInteger",
    "Cast",
    "Mul",
    "Add",
    "Softmax",
]
QDQ_OPS = [
    *["DequantizeLinear"] * 4,  # conv and fc weights and biases
    *["QuantizeLinear", "DequantizeLinear", "Conv"],  # the Relu folded into r's range
    *["QuantizeLinear", "DequantizeLinear", "GlobalAveragePool"],
    *["QuantizeLinear", "DequantizeLinear", "Flatten"],
    *["QuantizeLinear", "DequantizeLinear", "Gemm"],
    *["QuantizeLinear", "DequantizeLinear", "Softmax"],
    *["QuantizeLinear", "DequantizeLinear"],
]


def quantize_onnx(
    pool: WorkerPool, model: Path, out_dir: Path, mode: str, calibration: Path | None = None
) -> Path:
    """The converter, run in an onnx worker as a run's hop runs it."""
    outcome = pool_convert(pool, model, out_dir, mode, calibration)
    return Path(ok(outcome)["path"])


def pool_convert(
    pool: WorkerPool, model: Path, out_dir: Path, mode: str, calibration: Path | None = None
):
    options = ConvertOptions(ort_quant=mode).as_dict()
    return client.convert(
        pool, "onnx", "onnx", "onnx", model, out_dir, options, tool="ort-quantize",
        calibration=calibration,
    )  # fmt: skip


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _init(path: Path, name: str) -> np.ndarray:
    model = onnx.load(str(path))
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def _images(path: Path, count: int = 5, size: int = 16, seed: int = 0) -> Path:
    """Seeded NHWC images, one brighter than the rest (it alone sets the input's range)."""
    x = np.random.default_rng(seed).normal(0, 1, (count, size, size, 3)).astype(np.float32)
    x[2] *= 4
    np.savez(path, x=x)
    return path


def test_the_quantizer_is_a_transform_at_the_end_of_an_onnx_chain() -> None:
    static, dynamic = ConvertOptions(ort_quant="static-qdq"), ConvertOptions(ort_quant="dynamic")
    assert [(e.src, e.dst, e.name) for e in find_chain("torch", "onnx", options=static)] == [
        ("torch", "onnx", "torch-onnx"),
        ("onnx", "onnx", "ort-quantize"),
    ]
    (alone,) = find_chain("onnx", "onnx", options=dynamic)
    assert (alone.tool, alone.worker_kind, alone.options) == (
        "onnxruntime.quantization",
        "onnx",
        ("ort_quant",),
    )
    quantizer = edge("onnx", "onnx", "ort-quantize")
    assert quantizer.needs_calibration(static) and not quantizer.needs_calibration(dynamic)
    with pytest.raises(ConvdiffError) as caught:
        find_chain("keras", "tflite", options=dynamic)
    assert str(caught.value) == (
        "--ort-quant quantizes a onnx model; the target here is tflite; pass --dst onnx"
    )


def test_dynamic_makes_integer_ops_fed_by_dynamic_quantization(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path
) -> None:
    out = quantize_onnx(pool, tiny_onnx, tmp_path, "dynamic")
    assert out == tmp_path / "model-dynamic.onnx"
    assert _ops(out) == DYNAMIC_OPS
    assert _init(out, "conv_w_quantized").dtype == np.int8  # int8 weights, one scale each
    assert _init(out, "conv_w_scale").size == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-dynamic.onnx", "ort_quantize.json"]
    record = json.loads((tmp_path / "ort_quantize.json").read_text())
    assert (record["mode"], record["function"], record["weight_type"]) == (
        "dynamic",
        "quantize_dynamic",
        "QInt8",
    )


def test_static_qdq_calibrates_on_every_image_in_the_models_layout(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path
) -> None:
    images = _images(tmp_path / "x.npz")
    out_dir = tmp_path / "q"
    out = quantize_onnx(pool, tiny_onnx, out_dir, "static-qdq", images)
    assert _ops(out) == QDQ_OPS
    # per-channel int8 weights, uint8 activations
    assert _init(out, "conv_w_quantized").dtype == np.int8
    assert _init(out, "conv_w_scale").shape == (8,) and _init(out, "fc_w_scale").shape == (10,)
    assert _init(out, "input_zero_point").dtype == np.uint8
    # the input's range is exactly the images' (MinMax over all five, 0 included): the bright
    # third image sets it, so the calibrator saw every image
    with np.load(images) as data:
        x = data["x"]
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert float(_init(out, "input_scale")) == pytest.approx((high - low) / 255, rel=1e-6)
    # the folded Relu: r's range starts at exactly 0
    assert int(_init(out, "r_zero_point")) == 0
    record = json.loads((out_dir / "ort_quantize.json").read_text())
    assert (record["calibration_images"], record["calibration_layout"]) == (5, "NCHW")
    assert (record["activation_type"], record["per_channel"]) == ("QUInt8", True)


def test_static_qdq_without_images_is_the_converters_crash(
    pool: WorkerPool, tiny_onnx: Path, tmp_path: Path
) -> None:
    outcome = pool_convert(pool, tiny_onnx, tmp_path, "static-qdq")
    assert not outcome and outcome.error_type == "ValueError"
    assert outcome.message == "static-qdq quantization needs calibration images; none were given"


def _nhwc_classifier(path: Path, batch: int | str = "N") -> Path:
    """An NHWC (batch, 8, 8, 3) input transposed inside, as tf2onnx writes Keras models."""
    rng = np.random.default_rng(1)
    weights = {
        "w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "fc": rng.normal(0, 1, (4, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Transpose", ["input"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["out"]),
    ]
    return save_graph(path, nodes, "nhwc", [batch, 8, 8, 3], "out", [batch, 5], weights)


def test_calibration_images_follow_the_models_input_layout_and_batch(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    images = _images(tmp_path / "x.npz", count=5, size=8)
    with np.load(images) as data:
        x = data["x"]
    nchw = CalibrationImages(tiny_onnx, images)  # [1, 3, 16, 16]: one image per feed
    feeds = list(iter(nchw.get_next, None))
    assert (nchw.layout, nchw.images, len(feeds)) == ("NCHW", 5, 5)
    np.testing.assert_array_equal(feeds[1]["input"], x[1:2].transpose(0, 3, 1, 2))
    nhwc = CalibrationImages(_nhwc_classifier(tmp_path / "nhwc.onnx"), images)
    feeds = list(iter(nhwc.get_next, None))
    assert (nhwc.layout, nhwc.images, len(feeds)) == ("NHWC", 5, 5)
    np.testing.assert_array_equal(feeds[4]["input"], x[4:5])
    fixed = CalibrationImages(_nhwc_classifier(tmp_path / "fixed.onnx", batch=2), images)
    feeds = list(iter(fixed.get_next, None))  # the fifth image makes no batch of two
    assert (fixed.images, [f["input"].shape[0] for f in feeds]) == (4, [2, 2])


def test_an_nhwc_model_quantizes_with_its_own_layout(pool: WorkerPool, tmp_path: Path) -> None:
    model = _nhwc_classifier(tmp_path / "nhwc.onnx")
    images = _images(tmp_path / "x.npz", count=3, size=8)
    out = quantize_onnx(pool, model, tmp_path / "q", "static-qdq", images)
    quantization = {"QuantizeLinear", "DequantizeLinear"}
    assert [n for n in _ops(out) if n not in quantization] == [
        "Transpose",
        "Conv",
        "GlobalAveragePool",
        "Flatten",
        "MatMul",
    ]
    record = json.loads((tmp_path / "q" / "ort_quantize.json").read_text())
    assert record["calibration_layout"] == "NHWC"
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT


@pytest.mark.workers
@pytest.mark.parametrize("mode", ["dynamic", "static-qdq"])
def test_a_run_of_the_transform_alone(tiny_onnx: Path, tmp_path: Path, mode: str) -> None:
    """``convdiff run tiny.onnx --dst onnx --ort-quant MODE``: one hop, onnx -> onnx; static
    calibrates on exactly the images the run compares on."""
    config = RunConfig(
        model=str(tiny_onnx),
        dst="onnx",
        limit=4,
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        convert=ConvertOptions(ort_quant=mode),
        keep_inputs=True,
    )
    report = run(config, None)
    assert report.route == ["onnx", "onnx"] and report.status in ("ok", "discrepancy")
    (hop,) = report.chain
    assert (hop.src, hop.dst, hop.converter, hop.options) == (
        "onnx",
        "onnx",
        "ort-quantize",
        {"ort_quant": mode},
    )
    assert hop.agreement is not None and hop.agreement.images == 4
    quantized = Path(hop.artifact.path)
    assert quantized.name == f"model-{mode}.onnx"
    assert quantized.parent == tmp_path / "run" / "artifacts" / "1-onnx"
    assert _ops(quantized) == (DYNAMIC_OPS if mode == "dynamic" else QDQ_OPS)
    if mode == "static-qdq":
        x = np.load(tmp_path / "run" / "inputs" / "x-source.npy")
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        assert float(_init(quantized, "input_scale")) == pytest.approx((high - low) / 255)
