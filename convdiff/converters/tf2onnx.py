"""Keras, SavedModel and TFLite -> ONNX with tf2onnx 1.17.

Routes, measured with tf2onnx 1.17.0, TensorFlow 2.21.0, Keras 3.15.1:

- tf -> onnx: the path of ``python -m tf2onnx.convert --saved-model``: ``tf_loader.
  from_saved_model`` freezes the ``serving_default`` signature, then the CLI's own
  ``convert._convert_common`` (with ``continue_on_error=False``, as the CLI, so an op tf2onnx
  cannot convert is a crash and not a half-converted graph).
- keras -> onnx: ``model.export(dir)`` (Keras 3 SavedModel, ``training=False``) and then the
  SavedModel route. ``tf2onnx.convert.from_keras`` fails on Keras 3 Sequential models
  (``KeyError: 'keras_tensor_15'``) and works on functional ones; going through the SavedModel
  works for both, and the SavedModel is kept beside the .onnx for the localizer.
- tflite -> onnx: ``tf2onnx.convert.from_tflite``.

The input stays NHWC (no ``inputs_as_nchw``): the ONNX model takes what its source took.
``opset`` None means tf2onnx's default (15 in 1.17); the opset actually written is recorded in
``tf2onnx.json`` beside the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from convdiff.converters import converter
from convdiff.converters.keras_export import export_saved_model
from convdiff.core.options import ConvertOptions

if TYPE_CHECKING:  # onnx is imported by the worker that converts, never at import time
    import onnx

PACKAGES = ("tf2onnx", "tensorflow", "onnx")
# every edge of the tool, as @converter's keywords
TF2ONNX: dict = {
    "tool": "tf2onnx",
    "worker": "tf",
    "packages": PACKAGES,
    "options": ("opset",),
    "name": "tf2onnx",
}


@converter(
    "tf", "onnx", tool="tf2onnx", worker="tf", packages=PACKAGES, options=("opset",), name="tf2onnx"
)
def tf_to_onnx(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    return _saved_model_to_onnx(src, out_dir, opts, route="saved_model")


@converter(
    "keras",
    "onnx",
    tool="tf2onnx",
    worker="tf",
    packages=PACKAGES,
    options=("opset",),
    name="tf2onnx",
)
def keras_to_onnx(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    saved_model = export_saved_model(src, out_dir / "saved_model")
    return _saved_model_to_onnx(saved_model, out_dir, opts, route="keras export -> saved_model")


@converter(
    "tflite",
    "onnx",
    tool="tf2onnx",
    worker="tf",
    packages=PACKAGES,
    options=("opset",),
    name="tf2onnx",
)
def tflite_to_onnx(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    import tf2onnx

    out = out_dir / "model.onnx"
    model_proto, _ = tf2onnx.convert.from_tflite(str(src), opset=opts.opset, output_path=str(out))
    _record(out_dir, model_proto, opts, route="from_tflite")
    return out


def _saved_model_to_onnx(
    saved_model: Path, out_dir: Path, opts: ConvertOptions, route: str
) -> Path:
    import tensorflow as tf
    from tf2onnx import convert, tf_loader

    out = out_dir / "model.onnx"
    signature = _serving_signature(saved_model)
    with tf.device("/cpu:0"):
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            str(saved_model),
            None,
            None,
            signatures=[signature],
            return_initialized_tables=True,
            return_tensors_to_rename=True,
        )
        model_proto, _ = convert._convert_common(
            graph_def,
            name=str(saved_model),
            continue_on_error=False,
            opset=opts.opset,
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=renames,
            initialized_tables=tables,
            output_path=str(out),
        )
    _record(out_dir, model_proto, opts, route=f"{route} (signature {signature})")
    return out


def _serving_signature(saved_model: Path) -> str:
    """``serving_default`` if present, else the first by name: the rule of frameworks.tf."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model / "saved_model.pb").read_bytes())
    keys = sorted(k for k in proto.meta_graphs[0].signature_def if not k.startswith("__"))
    if not keys:
        raise ValueError(f"SavedModel {saved_model} has no serving signature")
    return "serving_default" if "serving_default" in keys else keys[0]


def _record(out_dir: Path, model_proto: onnx.ModelProto, opts: ConvertOptions, route: str) -> None:
    """Write what tf2onnx did, above all the opset it chose when none was asked for."""
    opset = next(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx"))
    record = {"tool": "tf2onnx", "route": route, "requested_opset": opts.opset, "opset": opset}
    (out_dir / "tf2onnx.json").write_text(json.dumps(record, indent=2) + "\n")
