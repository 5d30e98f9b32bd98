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
``supported_types=[tf.float16]``: float16 weights, dequantized at run time); ``int8``
(full-integer: ``Optimize.DEFAULT`` with a representative dataset, builtin int8 ops only: int8
weights per output channel, int32 biases, int8 activations whose scales and zero points the
converter calibrates on the run's own preprocessed images, :func:`representative_dataset`).

``tflite_io`` (int8 only): ``float`` keeps float32 inputs and outputs, with a QUANTIZE op after
the input and a DEQUANTIZE op before the output inside the model; ``int8`` / ``uint8`` make the
model take and give integers (``inference_input_type`` / ``inference_output_type``): the LiteRT
runner (:mod:`convdiff.frameworks.tflite`) quantizes the images with the input's own scale and
zero point and dequantizes the outputs, so they compare with the source's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.converters import CALIBRATION_IMAGES, converter
from convdiff.core.arrays import read_images
from convdiff.core.options import TFLITE_IO, TFLITE_OPTS, ConvertOptions
from convdiff.frameworks import layout_of
from convdiff.frameworks.keras import load as keras_load

MAX_CALIBRATION_IMAGES = CALIBRATION_IMAGES  # the run gives no more; a file may hold more


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
    src: Path,
    out_dir: Path,
    opts: ConvertOptions,
    input_shape: list[int | None] | None,
    calibration: Path | None = None,
) -> Path:
    converter = make_converter("keras", src, opts, _layout(input_shape), calibration)
    return _write(converter, out_dir)


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
    src: Path,
    out_dir: Path,
    opts: ConvertOptions,
    input_shape: list[int | None] | None,
    calibration: Path | None = None,
) -> Path:
    converter = make_converter("tf", src, opts, _layout(input_shape), calibration)
    return _write(converter, out_dir)


def make_converter(
    framework: str,
    src: Path,
    opts: ConvertOptions,
    layout: str = "NHWC",
    calibration: Path | None = None,
) -> Any:
    """The ``TFLiteConverter`` of a Keras file or SavedModel folder, set up for ``opts``;
    ``layout``: how the source takes images (NCHW: the calibration images are transposed).
    Shared with the float fallback (:mod:`convdiff.repair.fallback_tflite_tasks`), which must
    calibrate exactly as the conversion did to write the same model with some layers in
    float."""
    import tensorflow as tf

    if opts.tflite_opt not in TFLITE_OPTS:
        raise ValueError(f"unknown tflite_opt {opts.tflite_opt!r}; expected one of {TFLITE_OPTS}")
    if framework == "keras":
        tflite_converter = tf.lite.TFLiteConverter.from_keras_model(keras_load(str(src)))
    else:
        tflite_converter = tf.lite.TFLiteConverter.from_saved_model(str(src))
    if opts.tflite_opt != "none":
        tflite_converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if opts.tflite_opt == "float16":
        tflite_converter.target_spec.supported_types = [tf.float16]
    if opts.tflite_opt == "int8":
        if calibration is None:
            raise ValueError("full-integer quantization (tflite_opt=int8) needs calibration images")
        if opts.tflite_io not in TFLITE_IO:
            raise ValueError(f"unknown tflite_io {opts.tflite_io!r}; expected one of {TFLITE_IO}")
        tflite_converter.representative_dataset = representative_dataset(calibration, layout)
        tflite_converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if opts.tflite_io != "float":
            tflite_converter.inference_input_type = getattr(tf, opts.tflite_io)
            tflite_converter.inference_output_type = getattr(tf, opts.tflite_io)
    return tflite_converter


def representative_dataset(
    calibration: Path, layout: str = "NHWC"
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's representative dataset: the run's images one at a time (batch 1, as the
    converter feeds its calibration model), at most :data:`MAX_CALIBRATION_IMAGES`, in the
    source's ``layout``: ``x`` is NHWC, a source that takes NCHW gets it transposed."""
    x = read_images(calibration, limit=MAX_CALIBRATION_IMAGES)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def images() -> Iterator[list[np.ndarray]]:
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return images


def _layout(input_shape: list[int | None] | None) -> str:
    """How the source takes images, read from its input shape (NHWC when it cannot tell: the
    Keras and SavedModel habit)."""
    return layout_of(input_shape or [], "NHWC")


def _write(tflite_converter: Any, out_dir: Path) -> Path:
    out = out_dir / "model.tflite"
    out.write_bytes(tflite_converter.convert())
    return out
