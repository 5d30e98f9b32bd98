"""The TFLite float fallback's three functions (:mod:`convdiff.repair.fallback_tflite`) on the
tiny full-integer file: its quantized layers, their contributions measured by TFLite's
QuantizationDebugger, and the file rewritten with chosen layers in float -- read back from the
flatbuffer and run on LiteRT."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from convdiff.core.errors import ConvdiffError
from convdiff.ir import tflite_quant
from convdiff.repair import fallback_tflite
from convdiff.repair.fallback import FallbackContext, format_module
from convdiff.runtime.pool import WorkerPool
from tests.commands.localize.test_quant_tflite import DENSE
from tests.helpers import infer

pytestmark = pytest.mark.workers


def _context(pool: WorkerPool, keras_cnn_q: dict[str, str], target: str, work: Path):
    return FallbackContext(
        source=Path(keras_cnn_q["keras"]),
        source_framework="keras",
        target=Path(target),
        images=Path(keras_cnn_q["inputs"]),  # what the target was calibrated on
        pool=pool,
        work=work,
    )


def _ops(path: Path) -> list[tuple[str, list[str], str]]:
    model = tflite_quant.unpack(path)
    graph = model.subgraphs[0]

    def kind(index: int) -> str:
        return tflite_quant.type_name(graph.tensors[index].type)

    return [
        (tflite_quant.op_kind(model, op), [kind(int(i)) for i in op.inputs], kind(op.outputs[0]))
        for op in graph.operators
    ]


def test_the_quantized_layers_and_their_measured_contributions(
    pool: WorkerPool,
    keras_cnn_q: dict[str, str],
    int8_tflite: str,
    dynamic_range_tflite: str,
    tmp_path: Path,
) -> None:
    assert format_module("tflite") is fallback_tflite
    ctx = _context(pool, keras_cnn_q, int8_tflite, tmp_path)
    assert fallback_tflite.quantized_layers(ctx) == 4
    assert fallback_tflite.tflite_io(ctx.target) == "float"
    found = fallback_tflite.candidates(ctx)
    names = [op.name for op in tflite_quant.quantized_ops(int8_tflite)]
    assert [c.layer for c in found] == names  # every quantized layer, in the target's names
    assert {c.measure for c in found} == {fallback_tflite.MEASURE}
    assert all(0 < c.contribution < 1 and math.isfinite(c.contribution) for c in found)
    # a dynamic-range file keeps float activations: nothing to fall back, its patch repairs it
    dynamic = _context(pool, keras_cnn_q, dynamic_range_tflite, tmp_path)
    assert fallback_tflite.quantized_layers(dynamic) == 0


def test_write_runs_one_layer_in_float_and_keeps_the_others_int8(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path
) -> None:
    ctx = _context(pool, keras_cnn_q, int8_tflite, tmp_path)
    none = fallback_tflite.write(ctx, [], tmp_path / "none.tflite")
    one = fallback_tflite.write(ctx, [DENSE], tmp_path / "dense.tflite")
    assert _ops(one) == [
        ("QUANTIZE", ["FLOAT32"], "INT8"),
        ("CONV_2D", ["INT8", "INT8", "INT32"], "INT8"),
        ("MEAN", ["INT8", "INT32"], "INT8"),
        ("DEQUANTIZE", ["INT8"], "FLOAT32"),
        ("FULLY_CONNECTED", ["FLOAT32", "FLOAT32", "FLOAT32"], "FLOAT32"),  # the float layer
        ("QUANTIZE", ["FLOAT32"], "INT8"),
        ("SOFTMAX", ["INT8"], "INT8"),
        ("DEQUANTIZE", ["INT8"], "FLOAT32"),
    ]
    assert [op.kind for op in tflite_quant.quantized_ops(one)] == ["CONV_2D", "MEAN", "SOFTMAX"]
    assert _ops(none) == _ops(Path(int8_tflite))
    # nothing in float: the conversion itself, calibrated alike (the same outputs, bit for bit)
    inputs = keras_cnn_q["inputs"]
    y = infer(pool, "tflite", int8_tflite, inputs, tmp_path / "target.npz")
    assert np.array_equal(infer(pool, "tflite", none, inputs, tmp_path / "none.npz"), y)
    y_one = infer(pool, "tflite", one, inputs, tmp_path / "one.npz")
    assert not np.array_equal(y_one, y)
    assert one.stat().st_size > none.stat().st_size  # 240 float32 weights for 240 int8


def test_write_keeps_the_targets_integer_input_and_output(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    from convdiff.runtime import client
    from tests.helpers import ok

    options = {"tflite_opt": "int8", "tflite_io": "int8"}
    converted = client.convert(
        pool, "tf", "keras", "tflite", keras_cnn_q["keras"], tmp_path / "t", options,
        calibration=keras_cnn_q["inputs"],
    )  # fmt: skip
    target = ok(converted)["path"]
    ctx = _context(pool, keras_cnn_q, target, tmp_path)
    assert fallback_tflite.tflite_io(ctx.target) == "int8"
    written = _ops(fallback_tflite.write(ctx, [DENSE], tmp_path / "dense.tflite"))
    assert written[0] == ("CONV_2D", ["INT8", "INT8", "INT32"], "INT8")  # int8 in
    assert written[-1] == ("SOFTMAX", ["INT8"], "INT8")  # int8 out


def test_only_a_tensorflow_source_can_be_reconverted(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path
) -> None:
    ctx = _context(pool, keras_cnn_q, int8_tflite, tmp_path)
    ctx.source, ctx.source_framework = tmp_path / "model.onnx", "onnx"
    with pytest.raises(ConvdiffError) as error:
        fallback_tflite.candidates(ctx)
    assert error.value.problem == (
        "the float fallback of a full-integer .tflite reconverts its float source with "
        "TFLiteConverter, which converts Keras models and SavedModels; model.onnx is a onnx model"
    )
