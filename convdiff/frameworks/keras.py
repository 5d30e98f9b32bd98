"""Keras 3 models (.keras, .h5), run in a ``tf`` worker.

Loading is safe by default (:mod:`convdiff.core.trust`): Keras' ``safe_mode`` refuses Lambda
layers, whose code runs when the file loads. The Lambda layers onnx2keras writes are convdiff's
own output (their digest is recorded when the conversion writes them) and load with
``safe_mode=False``; so does any file when the user passed ``--trust-model-code``.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from convdiff.core.trust import may_run_code, refuse


def load(path: str) -> Any:
    """The model of a .keras/.h5 file, refusing one that would run code it carries."""
    import keras

    if may_run_code(path):
        return keras.saving.load_model(path, compile=False, safe_mode=False)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc):  # a Lambda layer: its bytecode would run
            raise refuse(path, "a Lambda layer (Python bytecode)") from None
        raise


def describe(model: Any) -> dict[str, Any]:
    first_input = model.inputs[0]
    first_output = model.outputs[0]
    return {
        "input_shape": _dims(first_input.shape),
        "input_dtype": str(first_input.dtype),
        "output_shape": _dims(first_output.shape),
        "input_name": first_input.name,
        "inputs": len(model.inputs),
    }


def predict(model: Any, batch: np.ndarray) -> np.ndarray:
    """First output of the model in inference mode (BatchNorm uses its moving statistics)."""
    import keras

    fixed = model.inputs[0].shape[0]
    if fixed is not None and fixed != len(batch):
        return np.concatenate(
            [predict(model, batch[i : i + fixed]) for i in range(0, len(batch), fixed)]
        )
    outputs = _graph(model)(batch)
    if isinstance(outputs, dict):
        outputs = outputs[sorted(outputs)[0]]
    elif isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    return np.asarray(keras.ops.convert_to_numpy(outputs))


# model -> its forward pass as one TensorFlow graph, traced once (per input rank and dtype)
_GRAPHS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _graph(model: Any) -> Any:
    """The model's inference call as a ``tf.function`` (no XLA): 1.6x faster than calling it
    eagerly on MobileNetV2 batches of 32, where a validation set of 50,000 images spends its
    time, and the same kernels as ``predict_on_batch``. Outputs move by about 1e-7 against the
    eager call (Grappler fuses Conv+BiasAdd+ReLU). Eager for a backend other than TF."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda batch: model(batch, training=False)
    try:
        return _GRAPHS[model]
    except KeyError:
        import tensorflow as tf

        graph = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
        _GRAPHS[model] = graph
        return graph
    except TypeError:  # an object that cannot be weakly referenced: call it as it is
        return lambda batch: model(batch, training=False)


def file_weights(path: str, out_npz: str) -> list[str]:
    """Task: every weight of a Keras model (``model.weights``, named by variable path such as
    ``conv/kernel``), as Keras stores them, to ``out_npz``; returns the names in order. For the
    weights stage when TVM cannot import a model (:mod:`convdiff.ir.file_weights`)."""
    model = load(path)
    arrays: dict[str, np.ndarray] = {}
    for variable in model.weights:
        name = getattr(variable, "path", None) or variable.name
        value = np.asarray(variable.numpy())
        if np.issubdtype(value.dtype, np.floating):
            arrays.setdefault(name, value.astype(np.float32))
    np.savez(out_npz, **arrays)
    return list(arrays)


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
