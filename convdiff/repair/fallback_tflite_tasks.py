"""The TensorFlow side of the TFLite float fallback: runs in a ``tf`` worker.

A full-integer .tflite file cannot be told to run a layer in float after the fact: its float
weights are gone. TFLite's own tool for this is ``tf.lite.experimental.QuantizationDebugger``
(TensorFlow 2.21: ``tensorflow/lite/tools/optimize/debugging/python/debugger.py``): built on the
``TFLiteConverter`` of the float source, it calibrates once, then quantizes the calibrated model
with ``QuantizationDebugOptions(denylisted_nodes=...)`` (op output tensor names) leaving those
ops in float, with QUANTIZE / DEQUANTIZE ops at their borders
(``get_nondebug_quantized_model``; the ``get_nodes_quantized_model`` some guides name does not
exist in 2.21). The converter is :func:`convdiff.converters.tflite_converter.make_converter`,
the very setup of the conversion, calibrated on the same images: with no layer denylisted the
file written gives the target's outputs exactly.

Two tasks:

- :func:`measure_layers`: each quantized layer's contribution, from the debugger's layer
  statistics on the calibration images. The debug model runs every quantized op beside its
  float original on the same (quantized) input, so an op's error is its own, not what it
  inherited. The contribution is the root-mean-square error of the op's output relative to the
  root-mean-square of the float output (a noise-to-signal ratio), rather than the guide's
  ``rmse / scale``: rmse/scale is about 0.29 for any op whose values are merely rounded to its
  grid, however coarse that grid is for the values it holds. A softmax whose 1000 outputs are
  all about 0.001, quantized with TFLite's fixed scale 1/256, has an ideal rmse/scale and loses
  every label; its rmse/rms is about 1.
- :func:`write_fallback`: the model with the given layers in float, in the target's input and
  output type (``tflite_io``; a float layer at the model's input or output takes or gives
  float32 there, since an integer input needs an integer first op).

Names: the debugger names an op by its output tensor in the calibrated (float) model; the
quantized file may add a digit to it (its float output keeps the name for the DEQUANTIZE). The
target's names, which findings and candidates use, are mapped onto the calibrated model's by
op position (both list the same ops in the same order once QUANTIZE / DEQUANTIZE are left
out, checked op kind by op kind), else by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convdiff.converters.tflite_converter import make_converter, representative_dataset
from convdiff.core.options import ConvertOptions
from convdiff.core.trust import record_written
from convdiff.ir import tflite_quant

VERIFY_PREFIX = "NumericVerify/"  # the debugger's names: NumericVerify/<quantized tensor>:<index>

# One debugger per (source, images, layout, io): building one converts and calibrates the
# source, which a repair's search would otherwise repeat for every set of layers it tries.
_DEBUGGERS: dict[tuple[Any, ...], Any] = {}


def measure_layers(
    framework: str, source: str, images: str, layout: str, tflite_io: str, target: str
) -> list[dict[str, Any]]:
    """Each quantized layer of ``target`` with its error on the calibration images:
    ``{"layer" (the target's name), "rmse", "rms", "scale", "contribution"}``, where
    contribution = rmse / rms (module docstring); in file order."""
    import tensorflow as tf

    debugger = _debugger(framework, source, images, layout, tflite_io)
    metrics = {"rmse": _rmse, "rms": _rms, "scale": _scale}
    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics=metrics)
    # a debugger made from model bytes keeps every tensor (the converter-made one does not),
    # which comparing the float and quantized tensors directly needs
    measuring = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=debugger.quant_model,
        debug_dataset=representative_dataset(Path(images), layout),
        debug_options=options,
    )
    measuring.run()
    names = to_target(debugger.calibrated_model, target)
    calibrated = set(names)
    found = []
    for verify_name, stats in measuring.layer_statistics.items():
        name = _verified_tensor(verify_name, calibrated)
        if name is None:
            continue
        rmse, rms = float(stats["rmse"]), float(stats["rms"])
        found.append(
            {
                "layer": names[name],
                "rmse": rmse,
                "rms": rms,
                "scale": float(stats["scale"]),
                "contribution": rmse / rms if rms > 0 else (0.0 if rmse == 0 else 1e9),
            }
        )
    order = {name: i for i, name in enumerate(names.values())}
    return sorted(found, key=lambda row: order[row["layer"]])


def write_fallback(
    framework: str,
    source: str,
    images: str,
    layout: str,
    tflite_io: str,
    target: str,
    layers: list[str],
    out: str,
) -> dict[str, Any]:
    """Write the target with ``layers`` (its own names) in float to ``out``. Returns the path
    and the input and output types the written file has."""
    import tensorflow as tf
    from tensorflow.lite.python.util import modify_model_io_type

    debugger = _debugger(framework, source, images, layout, tflite_io)
    names = {t: c for c, t in to_target(debugger.calibrated_model, target).items()}
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        raise ValueError(f"{target} has no quantized layer named {unknown[0]!r}")
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=[names[layer] for layer in layers]
    )
    written = debugger.get_nondebug_quantized_model()
    if tflite_io != "float":  # the converter's own rewrite of the float input and output
        io_type = getattr(tf, tflite_io)
        written = modify_model_io_type(written, io_type, io_type)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(written)
    record_written(path)
    return {"path": str(path), "io": _io_types(path)}


def to_target(calibrated: bytes, target: str) -> dict[str, str]:
    """The calibrated model's op output names -> the target file's names of the same ops."""
    ops_c = _ops(tflite_quant.unpack_bytes(calibrated))
    ops_t = _ops(tflite_quant.unpack(target))
    if [k for k, _ in ops_c] == [k for k, _ in ops_t]:
        return {c: t for (_, c), (_, t) in zip(ops_c, ops_t, strict=True)}
    targets = {t for _, t in ops_t}
    mapped = {}
    for _, name in ops_c:  # by name: the same, or the quantized file's with a digit added
        same = [t for t in targets if t == name or (t[:-1] == name and t[-1].isdigit())]
        if len(same) == 1:
            mapped[name] = same[0]
    return mapped


def _ops(model: Any) -> list[tuple[str, str]]:
    """(kind, first output's name) of the first subgraph's ops, QUANTIZE/DEQUANTIZE left out."""
    graph = model.subgraphs[0]
    found = []
    for op in graph.operators:
        kind = tflite_quant.op_kind(model, op)
        if kind not in tflite_quant.CONVERSION_OPS:
            found.append((kind, graph.tensors[int(op.outputs[0])].name.decode()))
    return found


def _verified_tensor(verify_name: str, calibrated: set[str]) -> str | None:
    """The calibrated model's name of the op a NumericVerify tensor checks: its quantized
    tensor's name, which carries one more digit when the quantizer renamed it."""
    name = verify_name.removeprefix(VERIFY_PREFIX).rpartition(":")[0]
    for candidate in (name, name[:-1]):
        if candidate in calibrated:
            return candidate
    return None


def _rmse(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    """Root-mean-square difference of the float op's output and the quantized op's."""
    dequantized = (q.astype(np.float64) - zero_point) * scale
    return float(np.sqrt(np.mean((f.astype(np.float64) - dequantized) ** 2)))


def _rms(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    """Root-mean-square of the float op's output: the signal the error is weighed against."""
    return float(np.sqrt(np.mean(f.astype(np.float64) ** 2)))


def _scale(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    """The quantized output's scale (for the report's rmse/scale, the guide's measure)."""
    return float(scale)


def _debugger(framework: str, source: str, images: str, layout: str, tflite_io: str) -> Any:
    import tensorflow as tf

    stamp = (Path(source).stat().st_mtime, Path(images).stat().st_mtime)
    key = (framework, str(Path(source).resolve()), str(Path(images).resolve()), stamp)
    key += (layout, tflite_io)
    if key not in _DEBUGGERS:
        _DEBUGGERS.clear()  # one at a time: each holds a converted model
        options = ConvertOptions(tflite_opt="int8", tflite_io=tflite_io)
        converter = make_converter(framework, Path(source), options, layout, Path(images))
        _DEBUGGERS[key] = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset(Path(images), layout)
        )
    return _DEBUGGERS[key]


def _io_types(path: Path) -> dict[str, str]:
    model = tflite_quant.unpack(path)
    graph = model.subgraphs[0]
    return {
        "input": tflite_quant.type_name(graph.tensors[int(graph.inputs[0])].type),
        "output": tflite_quant.type_name(graph.tensors[int(graph.outputs[0])].type),
    }
