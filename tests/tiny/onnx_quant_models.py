"""ONNX models quantized by onnxruntime's own quantizer, the way users quantize them:
``quantize_dynamic`` (ConvInteger / MatMulInteger), ``quantize_static`` in the QDQ and the
QOperator formats (calibrated on a few seeded random inputs). onnxruntime.quantization is
plain Python over onnx and onnxruntime: the test process may run it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

MODES = ("dynamic", "qdq", "qoperator")


class _Calibration:
    """Four seeded N(0, 1) inputs of the model's input shape (a CalibrationDataReader)."""

    def __init__(self, model: Path, seed: int = 0) -> None:
        proto = onnx.load(str(model))
        first = proto.graph.input[0]
        shape = [d.dim_value or 1 for d in first.type.tensor_type.shape.dim]
        rng = np.random.default_rng(seed)
        feeds = [{first.name: rng.normal(0, 1, shape).astype(np.float32)} for _ in range(4)]
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize(src: Path, out: Path, mode: str, per_channel: bool = False) -> Path:
    """``src`` quantized by onnxruntime in ``mode`` (:data:`MODES`), int8 weights."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing"
    if mode == "dynamic":
        quantize_dynamic(str(src), str(out), per_channel=per_channel)
    else:
        fmt = QuantFormat.QDQ if mode == "qdq" else QuantFormat.QOperator
        quantize_static(
            str(src), str(out), _Calibration(src), quant_format=fmt, per_channel=per_channel
        )
    return out


def with_weights(src: Path, out: Path, values: dict[str, np.ndarray]) -> Path:
    """``src`` with some initializers replaced (the float model on dequantized weights)."""
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.name in values:
            init.CopyFrom(numpy_helper.from_array(values[init.name].astype(np.float32), init.name))
    onnx.save(model, str(out))
    return out
