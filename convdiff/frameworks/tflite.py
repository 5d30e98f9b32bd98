"""TFLite flatbuffers, run with the LiteRT interpreter in a ``litert`` worker.

``ai_edge_litert`` rather than ``tf.lite.Interpreter``: the latter is deprecated, and the
litert worker must never import TensorFlow. Models converted from a Keras model with a free
batch dimension carry ``shape_signature`` -1 and can be resized to the whole batch; a model whose
batch is fixed (usually 1) is run in slices, because resizing a fixed dimension can silently
break reshapes baked into the graph.
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
    model.set_tensor(inp["index"], np.ascontiguousarray(batch, dtype=inp["dtype"]))
    model.invoke()
    return np.array(model.get_tensor(model.get_output_details()[0]["index"]))


def _dims(details: dict[str, Any]) -> list[int | None]:
    signature = details.get("shape_signature")
    if signature is None or not len(signature):
        signature = details["shape"]
    return [None if int(d) < 0 else int(d) for d in signature]
