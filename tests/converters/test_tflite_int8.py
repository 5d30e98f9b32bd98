"""Full-integer TFLite (``--tflite-opt int8``): the TFLiteConverter calibrated on the run's
images, for each ``--tflite-io``, and the LiteRT runner feeding and reading integer tensors.

The tiny Keras CNN with 48 filters (tests/tiny/keras_models.py), calibrated on its 4 input
images. What the files hold is read from the flatbuffer: every op's input and output types
(measured with TensorFlow 2.21.0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convdiff.ir import tflite_quant
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import infer, ok

pytestmark = pytest.mark.workers

# op -> (its input tensors' types, its output's type), in file order, for the float-IO file
BODY = [
    ("CONV_2D", ["INT8", "INT8", "INT32"], "INT8"),  # image, kernel, bias
    ("MEAN", ["INT8", "INT32"], "INT8"),  # the global average pool; the axes
    ("FULLY_CONNECTED", ["INT8", "INT8", "INT32"], "INT8"),
    ("SOFTMAX", ["INT8"], "INT8"),
]
LAYOUT = {
    "float": [("QUANTIZE", ["FLOAT32"], "INT8"), *BODY, ("DEQUANTIZE", ["INT8"], "FLOAT32")],
    "int8": BODY,
    "uint8": [("QUANTIZE", ["UINT8"], "INT8"), *BODY, ("QUANTIZE", ["INT8"], "UINT8")],
}


def _ops(path: str) -> list[tuple[str, list[str], str]]:
    model = tflite_quant.unpack(path)
    graph = model.subgraphs[0]

    def kind(index: int) -> str:
        return tflite_quant.type_name(graph.tensors[index].type)

    return [
        (
            tflite_quant.op_kind(model, op),
            [kind(int(i)) for i in op.inputs],
            kind(int(op.outputs[0])),
        )
        for op in graph.operators
    ]


def _convert(
    pool: WorkerPool,
    keras_cnn_q: dict[str, str],
    out: Path,
    io: str,
    calibration: Path | None = None,
) -> str:
    options = {"tflite_opt": "int8", "tflite_io": io}
    outcome = client.convert(
        pool, "tf", "keras", "tflite", keras_cnn_q["keras"], out, options,
        calibration=calibration or keras_cnn_q["inputs"],
    )  # fmt: skip
    return ok(outcome)["path"]


@pytest.mark.parametrize("io", ["int8", "uint8"])
def test_int8_weights_and_activations_for_each_io_type(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path, io: str
) -> None:
    files = {"float": int8_tflite, io: _convert(pool, keras_cnn_q, tmp_path, io)}
    for kind, path in files.items():
        assert _ops(path) == LAYOUT[kind], kind
    # int8 weights per output channel, int32 biases scaled by input x weight scale
    report = tflite_quant.read(int8_tflite)
    found = {t.name: (t.dtype, t.shape, len(t.scales), set(t.zero_points)) for t in report.tensors}
    assert found == {
        "tiny_cnn_1/conv_1/convolution": ("INT8", [48, 3, 3, 3], 48, {0}),
        "tiny_cnn_1/dense_1/MatMul": ("INT8", [5, 48], 5, {0}),
        "tiny_cnn_1/relu_1/Relu;tiny_cnn_1/bn_1/batchnorm/add_1;tiny_cnn_1/conv_1/convolution;"
        "tiny_cnn_1/bn_1/batchnorm/sub": ("INT32", [48], 48, {0}),
        "tiny_cnn_1/dense_1/BiasAdd": ("INT32", [5], 5, {0}),
    }
    ops = tflite_quant.quantized_ops(int8_tflite)
    conv = ops[0]
    assert conv.bias is not None and conv.weight is not None
    expected = np.float64(conv.inputs[0].scale) * np.asarray(conv.weight.scales)
    assert np.allclose(conv.bias.scales, expected, rtol=1e-6)


def test_the_runner_quantizes_inputs_and_dequantizes_outputs(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    """Each IO type's file gives the float-IO file's outputs exactly: the runner rounds the
    images as that file's own QUANTIZE op does, ties included. Pixels preprocessed as
    ``k / 127.5 - 1`` (Keras' inception mode), calibrated on themselves (-1 and 1 included),
    give the input the scale 1/127.5: every pixel lies halfway between two of its steps."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 8, 8, 3))
    x[0, 0, 0, :2] = (0, 255)
    pixels = tmp_path / "pixels.npz"
    np.savez(pixels, x=(x / 127.5 - 1).astype(np.float32))
    y = {}
    for io in ("float", "int8", "uint8"):
        path = _convert(pool, keras_cnn_q, tmp_path / io, io, calibration=pixels)
        assert ok(client.probe(pool, "tflite", path))["input_dtype"] == (
            "float32" if io == "float" else io
        )
        y[io] = infer(pool, "tflite", path, pixels, tmp_path / f"{io}.npz")
        assert y[io].dtype == np.float32
    scale = tflite_quant.quantized_ops(path)[0].inputs[0].scale
    assert scale == pytest.approx(1 / 127.5, rel=1e-6)  # so every pixel is a tie
    assert np.array_equal(y["int8"], y["float"])
    assert np.array_equal(y["uint8"], y["float"])


def test_int8_stays_within_its_steps_of_the_keras_model(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path
) -> None:
    y = infer(pool, "tflite", int8_tflite, keras_cnn_q["inputs"], tmp_path / "y.npz")
    with np.load(keras_cnn_q["reference"]) as data:
        diff = float(np.abs(y - data["y"]).max())
    assert 1e-4 < diff < 2e-2  # the softmax alone has steps of 1/256


def test_a_savedmodel_converts_to_the_same_int8_model(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path
) -> None:
    """tf -> tflite (``from_saved_model``) calibrates on the same images: the same ops, and
    the same outputs as the Keras model's full-integer conversion."""
    folder = str(tmp_path / "saved_model")
    task = "tests.tiny.keras_models:write_saved_model"
    ok(pool.call("tf", task, keras_path=keras_cnn_q["keras"], out_dir=folder))
    outcome = client.convert(
        pool, "tf", "tf", "tflite", folder, tmp_path / "tflite", {"tflite_opt": "int8"},
        calibration=keras_cnn_q["inputs"],
    )  # fmt: skip
    path = ok(outcome)["path"]
    assert [kind for kind, _, _ in _ops(path)] == [kind for kind, _, _ in LAYOUT["float"]]
    inputs = keras_cnn_q["inputs"]
    y = infer(pool, "tflite", path, inputs, tmp_path / "tf.npz")
    assert np.array_equal(y, infer(pool, "tflite", int8_tflite, inputs, tmp_path / "k.npz"))


def test_int8_without_calibration_images_is_refused(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    outcome = client.convert(
        pool, "tf", "keras", "tflite", keras_cnn_q["keras"], tmp_path, {"tflite_opt": "int8"}
    )
    assert not outcome
    assert outcome.message == (
        "full-integer quantization (tflite_opt=int8) needs calibration images"
    )
