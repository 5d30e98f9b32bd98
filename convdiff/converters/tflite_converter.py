"""Keras and SavedModel -> TFLite with ``tf.lite.TFLiteConverter`` (TensorFlow 2.21).

Routes, measured with TensorFlow 2.21.0 and Keras 3.15.1:

- keras -> tflite: ``TFLiteConverter.from_keras_model``. For a Keras 3 model it first writes a
  SavedModel through ``keras.export.ExportArchive`` with ``training=False`` and converts that,
  so it gives the same graph as ``model.export(dir)`` + ``from_saved_model`` (both checked on
  the tiny test model: max abs diff 3e-8 from Keras). We keep the tool's own Keras entry point
  because it is the call users make.
- tf -> tflite: ``TFLiteConverter.from_saved_model`` (its ``serving_default`` signature).

``tflite_opt``: ``none``; ``dynamic-range`` (``Optimize.DEFAULT`` without a representative
dataset: int8 weights, float activations -- the setting of the published study; tensors with
fewer than 1024 elements stay float32); ``float16`` (``Optimize.DEFAULT`` with
``supported_types=[tf.float16]``: float16 weights, dequantized at run time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.converters import converter
from convdiff.core.options import TFLITE_OPTS, ConvertOptions
from convdiff.frameworks.keras import load as keras_load


@converter(
    "keras",
    "tflite",
    tool="TFLiteConverter",
    worker="tf",
    packages=("tensorflow",),
    options=("tflite_opt", "tflite_io"),
    name="tflite-converter",
    calibrate_when=("tflite_opt=int8",),
)
def keras_to_tflite(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    import tensorflow as tf

    model = keras_load(str(src))
    return _convert(tf.lite.TFLiteConverter.from_keras_model(model), opts, out_dir)


@converter(
    "tf",
    "tflite",
    tool="TFLiteConverter",
    worker="tf",
    packages=("tensorflow",),
    options=("tflite_opt", "tflite_io"),
    name="tflite-converter",
    calibrate_when=("tflite_opt=int8",),
)
def tf_to_tflite(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    import tensorflow as tf

    return _convert(tf.lite.TFLiteConverter.from_saved_model(str(src)), opts, out_dir)


def _convert(tflite_converter: Any, opts: ConvertOptions, out_dir: Path) -> Path:
    import tensorflow as tf

    if opts.tflite_opt not in TFLITE_OPTS:
        raise ValueError(f"unknown tflite_opt {opts.tflite_opt!r}; expected one of {TFLITE_OPTS}")
    if opts.tflite_opt in ("dynamic-range", "float16"):
        tflite_converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if opts.tflite_opt == "float16":
        tflite_converter.target_spec.supported_types = [tf.float16]
    out = out_dir / "model.tflite"
    out.write_bytes(tflite_converter.convert())
    return out
