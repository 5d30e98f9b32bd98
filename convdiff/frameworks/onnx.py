"""ONNX models, run with onnxruntime's CPU provider in an ``onnx`` worker.

A symbolic dimension (``"unk__14"``, ``"batch"``) is reported as None. An exporter that fixed
the batch at 1 (common for torch.onnx and tf2onnx from TFLite) is fed one slice at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def load(path: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def describe(model: Any) -> dict[str, Any]:
    inp = model.get_inputs()[0]
    out = model.get_outputs()[0]
    return {
        "input_shape": _dims(inp.shape),
        "input_dtype": _DTYPES.get(inp.type, inp.type),
        "output_shape": _dims(out.shape),
        "input_name": inp.name,
        "inputs": len(model.get_inputs()),
    }


def predict(model: Any, batch: np.ndarray) -> np.ndarray:
    inp = model.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    if fixed is not None and fixed != len(batch):
        return np.concatenate(
            [predict(model, batch[i : i + fixed]) for i in range(0, len(batch), fixed)]
        )
    dtype = np.dtype(_DTYPES.get(inp.type, "float32"))
    return model.run(None, {inp.name: np.ascontiguousarray(batch, dtype=dtype)})[0]


def _dims(shape: list[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]
