"""TFLite flatbuffers, run with the LiteRT interpreter in a ``litert`` worker.

``ai_edge_litert`` rather than ``tf.lite.Interpreter``: the latter is deprecated, and the
litert worker must never import TensorFlow. Models converted from a Keras model with a free
batch dimension carry ``shape_signature`` -1 and can be resized to the whole batch; a model whose
batch is fixed (usually 1) is run in slices, because resizing a fixed dimension can silently
break reshapes baked into the graph.

A full-integer model may take and give integers (``--tflite-io int8|uint8``): the float images
are quantized with the input tensor's own scale and zero point (``round(x / scale) + zero``,
clipped to the type's range), and
integer outputs are dequantized with the output's (``(q - zero) * scale``), so every runtime's
outputs compare with the source's on the same scale. Ties round to even, as LiteRT's own
QUANTIZE op does here (XNNPACK; TFLite's reference kernel rounds them away from zero): images
preprocessed as ``k / 127.5 - 1`` land exactly halfway between two steps of a 1/127.5 scale for
a fifth of their pixels, and rounding those another way changed 12% of MobileNetV2's labels
against the same model with a float input.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def load(path: str) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return interpreter


def describe(model: Any) -> dict[str, Any]:
    inp = model.get_input_details()[0]
    out = model.get_output_details()[0]
    return {
        "input_shape": _dims(inp),
        "input_dtype": np.dtype(inp["dtype"]).name,
        "output_shape": _dims(out),
        "input_name": inp["name"],
        "inputs": len(model.get_input_details()),
    }


def predict(model: Any, batch: np.ndarray) -> np.ndarray:
    inp = model.get_input_details()[0]
    signature = inp.get("shape_signature", inp["shape"])
    if len(signature) and signature[0] == -1:
        if list(inp["shape"]) != list(batch.shape):
            model.resize_tensor_input(inp["index"], list(batch.shape), strict=True)
            model.allocate_tensors()
        return _invoke(model, batch)
    fixed = int(inp["shape"][0])
    return np.concatenate(
        [_invoke(model, batch[i : i + fixed]) for i in range(0, len(batch), fixed)]
    )


def _invoke(model: Any, batch: np.ndarray) -> np.ndarray:
    inp = model.get_input_details()[0]
    model.set_tensor(inp["index"], quantize(batch, inp))
    model.invoke()
    out = model.get_output_details()[0]
    return dequantize(np.array(model.get_tensor(out["index"])), out)


def quantize(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """``x`` as the tensor of ``details`` takes it: integers on its scale and zero point for an
    integer tensor that has them, else a plain cast."""
    dtype = np.dtype(details["dtype"])
    scale, zero = details.get("quantization", (0.0, 0))
    if dtype.kind not in "iu" or not scale:
        return np.ascontiguousarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero  # ties to even
    return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))


def dequantize(y: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """An integer output as float32 on its scale and zero point; anything else unchanged."""
    scale, zero = details.get("quantization", (0.0, 0))
    if y.dtype.kind not in "iu" or not scale:
        return y
    return ((y.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)


def _dims(details: dict[str, Any]) -> list[int | None]:
    signature = details.get("shape_signature")
    if signature is None or not len(signature):
        signature = details["shape"]
    return [None if int(d) < 0 else int(d) for d in signature]
