"""Keras 3 -> SavedModel with ``model.export(dir)``.

Keras 3 dropped ``tf.saved_model.save(model)`` support for its models; ``model.export`` is its
replacement. It writes ``serve`` and ``serving_default`` signatures that call the model with
``training=False`` (checked: BatchNorm uses its moving statistics, max abs diff 3e-8 from
Keras on the tiny test model), which is what TF Serving, the TFLite converter and tf2onnx read.
"""

from __future__ import annotations

from pathlib import Path

from convdiff.converters import converter
from convdiff.core.options import ConvertOptions
from convdiff.frameworks.keras import load as keras_load


@converter(
    "keras",
    "tf",
    tool="keras.Model.export",
    worker="tf",
    packages=("keras", "tensorflow"),
    name="keras-export",
)
def keras_to_tf(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    return export_saved_model(src, out_dir / "saved_model")


def export_saved_model(src: Path, out: Path) -> Path:
    """The Keras model file ``src`` as a SavedModel folder ``out`` (``Model.export``, inference
    mode): the form TF tools read (tf2onnx converts it too)."""

    model = keras_load(str(src))
    model.export(str(out), format="tf_saved_model", verbose=False)
    return out
