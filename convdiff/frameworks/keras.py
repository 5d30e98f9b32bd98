"""Keras 3 models (.keras, .h5), run in a ``tf`` worker.

Loading uses ``safe_mode=False`` on purpose: models written by onnx2keras are made of Lambda
layers, which safe mode refuses to deserialize. convdiff runs a model the user asked it to run,
so executing the model's own code is the same trust a framework runtime gives it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def load(path: str) -> Any:
    import keras

    return keras.saving.load_model(path, compile=False, safe_mode=False)


def describe(model: Any) -> dict[str, Any]:
    first_input = model.inputs[0]
    first_output = model.outputs[0]
    return {
        "input_shape": _dims(first_input.shape),
        "input_dtype": str(first_input.dtype),
        "output_shape": _dims(first_output.shape),
        "input_name": first_input.name,
    }


def predict(model: Any, batch: np.ndarray) -> np.ndarray:
    """First output of the model in inference mode (BatchNorm uses its moving statistics)."""
    import keras

    fixed = model.inputs[0].shape[0]
    if fixed is not None and fixed != len(batch):
        return np.concatenate(
            [predict(model, batch[i : i + fixed]) for i in range(0, len(batch), fixed)]
        )
    outputs = model(batch, training=False)
    if isinstance(outputs, dict):
        outputs = outputs[sorted(outputs)[0]]
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return np.asarray(keras.ops.convert_to_numpy(outputs))


def _dims(shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def make_lambdas_serializable(model: Any) -> None:
    """Before saving: each Lambda's function is stored as bytecode, its default arguments as
    the layer's ``arguments`` (see :mod:`convdiff.converters.onnx2keras` for why). Call it
    on every model about to be saved that may hold onnx2keras' Lambda layers."""
    import keras

    for layer in model.layers:
        if not isinstance(layer, keras.layers.Lambda):
            continue
        function = layer.function
        code = function.__code__
        bound = dict(function.__kwdefaults__ or {})
        if function.__defaults__:
            names = code.co_varnames[: code.co_argcount]
            bound.update(
                zip(names[-len(function.__defaults__) :], function.__defaults__, strict=True)
            )
        layer.arguments = {**bound, **(layer.arguments or {})}
        function.__defaults__ = None
        function.__kwdefaults__ = None
        function.__name__ = "<lambda>"
