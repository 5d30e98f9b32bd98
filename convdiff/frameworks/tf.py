"""TensorFlow SavedModel folders, run in a ``tf`` worker through their serving signature.

The ``serving_default`` signature is what TF Serving, the TFLite converter and tf2onnx's
``--saved-model`` read, so it is the function convdiff compares. A model with several inputs or
outputs is reduced to the first of each, in name order, so every run picks the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Served:
    """A signature and the loaded object that owns its variables (which must outlive it)."""

    owner: Any
    fn: Any
    key: str


def load(path: str) -> Served:
    """The serving signature of the SavedModel, or its first signature by name."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    signatures = loaded.signatures
    if not signatures:
        raise ValueError(f"SavedModel {path} has no signatures; export it with a serving signature")
    key = SIGNATURE if SIGNATURE in signatures else sorted(signatures)[0]
    return Served(owner=loaded, fn=signatures[key], key=key)


def describe(model: Served) -> dict[str, Any]:
    name, spec = _input_spec(model)
    outputs = model.fn.structured_outputs
    output = outputs[sorted(outputs)[0]]
    return {
        "input_shape": _dims(spec.shape),
        "input_dtype": spec.dtype.name,
        "output_shape": _dims(output.shape),
        "input_name": name,
        "inputs": len(model.fn.structured_input_signature[1]),
    }


def predict(model: Served, batch: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    name, spec = _input_spec(model)
    fixed = spec.shape[0]
    if fixed is not None and fixed != len(batch):
        return np.concatenate(
            [predict(model, batch[i : i + fixed]) for i in range(0, len(batch), fixed)]
        )
    outputs = model.fn(**{name: tf.constant(batch, dtype=spec.dtype)})
    return outputs[sorted(outputs)[0]].numpy()


def _input_spec(model: Served) -> tuple[str, Any]:
    _, kwargs = model.fn.structured_input_signature
    name = sorted(kwargs)[0]
    return name, kwargs[name]


def _dims(shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]
