"""ONNX -> Keras with onnx2keras 0.0.25.

onnx2keras builds a channels-first Keras model that takes the ONNX model's own input layout
(NCHW for a torch export). It crashes on many real graphs -- e.g. on every tf2onnx classifier
("weight shape (1, 5) is not compatible with provided weight shape (4, 5)": its Squeeze after
GlobalAveragePool loses the channel dimension) -- and such an exception is left to propagate:
the orchestrator records it as the tool's crash.

Two things are convdiff's, not the tool's:

- onnx2keras sets Keras' global image data format to ``channels_first`` and restores it only
  on success; we restore it on failure too, or every later Keras task in the worker would
  build channels-first layers.
- Its Lambda layers wrap locally defined functions named ``target_layer``, whose parameters
  (axes, shapes) are default arguments. Keras 3.15 saves a named function by reference and
  cannot load it back ("Could not locate function 'target_layer'", in .keras and .h5 alike);
  it stores a function named ``<lambda>`` as bytecode, but then fails to load one with
  default arguments ("arg 4 (defaults) must be None or tuple": the defaults come back from
  JSON as a list). So each function's defaults are moved into the layer's ``arguments``
  (which Lambda passes as keyword arguments, and serializes as data) and the function is
  renamed ``<lambda>`` (:func:`convdiff.frameworks.keras.make_lambdas_serializable`, which
  every writer of a loaded model calls again: a function loaded back from bytecode takes its
  code's name, ``target_layer``, once more). The computation is unchanged; the model is
  written as .keras and loads with ``safe_mode=False``.

Running the result needs TensorFlow's oneDNN kernels (its x86 default): plain TF has no NCHW
Conv2D on the CPU, which is why the workers no longer set ``TF_ENABLE_ONEDNN_OPTS=0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.converters import converter
from convdiff.core.options import ConvertOptions
from convdiff.frameworks.keras import make_lambdas_serializable


@converter(
    "onnx",
    "keras",
    tool="onnx2keras",
    worker="tf",
    packages=("onnx2keras", "keras", "onnx"),
    name="onnx2keras",
)
def onnx_to_keras(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    import keras
    import onnx
    from onnx2keras import onnx_to_keras as convert

    model_proto = onnx.load(str(src))
    initializers = {t.name for t in model_proto.graph.initializer}
    inputs = [i for i in model_proto.graph.input if i.name not in initializers]
    shapes = _input_shapes(inputs, input_shape)
    data_format = keras.backend.image_data_format()
    try:
        model = convert(model_proto, [i.name for i in inputs], input_shapes=shapes, verbose=False)
    finally:
        keras.backend.set_image_data_format(data_format)
    make_lambdas_serializable(model)
    out = out_dir / "model.keras"
    model.save(str(out))
    return out


def _input_shapes(inputs: list[Any], input_shape: list[int | None] | None) -> list | None:
    """Shapes for onnx2keras only when the ONNX graph leaves a non-batch dimension unknown.

    onnx2keras reads ``dim_value`` and would build an Input of size 0 for a symbolic dimension.
    """
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim][1:] for i in inputs]
    if all(all(v > 0 for v in shape) for shape in dims):
        return None
    if input_shape is None or len(inputs) != 1 or any(d is None for d in input_shape[1:]):
        return None  # let onnx2keras fail and say why
    return [list(input_shape[1:])]
