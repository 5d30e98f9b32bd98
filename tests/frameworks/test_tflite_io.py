"""The LiteRT runner's integer inputs and outputs (``--tflite-io int8|uint8``), by hand: the
float images are put on the input tensor's scale and zero point, integer outputs are read back
on the output's. Pure numpy: no interpreter is needed to check the arithmetic."""

from __future__ import annotations

import numpy as np

from convdiff.frameworks.tflite import dequantize, quantize

INT8 = {"dtype": np.int8, "quantization": (0.5, -3)}
UINT8 = {"dtype": np.uint8, "quantization": (0.25, 128)}


def test_images_are_rounded_onto_the_inputs_grid_and_clipped() -> None:
    x = np.array([0.0, 0.24, 0.26, -1.0, 70.0, -70.0], dtype=np.float32)
    assert quantize(x, INT8).tolist() == [-3, -3, -2, -5, 127, -128]
    assert quantize(x, INT8).dtype == np.int8
    assert quantize(x, UINT8).tolist() == [128, 129, 129, 124, 255, 0]
    # ties go to even, as LiteRT's QUANTIZE op (XNNPACK) rounds them
    ties = np.array([0.25, -0.25, 0.75, -0.75], dtype=np.float32)
    assert quantize(ties, INT8).tolist() == [-3, -3, -1, -5]


def test_integer_outputs_are_read_on_the_outputs_grid() -> None:
    y = np.array([-128, -3, 0, 127], dtype=np.int8)
    assert dequantize(y, INT8).tolist() == [-62.5, 0.0, 1.5, 65.0]
    assert dequantize(y, INT8).dtype == np.float32


def test_float_tensors_pass_unchanged() -> None:
    floats = {"dtype": np.float32, "quantization": (0.0, 0)}
    x = np.array([0.1, -2.5], dtype=np.float64)
    assert quantize(x, floats).dtype == np.float32
    assert quantize(x, floats).tolist() == [np.float32(0.1), -2.5]
    y = np.array([0.1, 0.2], dtype=np.float32)
    assert dequantize(y, floats) is y
