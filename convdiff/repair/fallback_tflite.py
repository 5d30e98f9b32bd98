"""Float fallback for full-integer TFLite targets (``--tflite-opt int8``): the three functions
of :mod:`convdiff.repair.fallback`'s format contract.

The quantized layers are read from the file (:func:`convdiff.ir.tflite_quant.quantized_ops`:
every op computing on integer activations, those that only move values left out). Measuring
and rewriting need TensorFlow: TFLite's QuantizationDebugger, built on the float source's
converter, in a ``tf`` worker (:mod:`convdiff.repair.fallback_tflite_tasks`). So the source
must be the Keras model or SavedModel the target was converted from, and the images the
conversion calibrated on: the run's own, which a repair of that run is given. A dynamic-range
or float file has no quantized activations: 0 layers, the repair's patch restores its weights.

The target's input and output type (``--tflite-io``) is read from the file and kept.

Every file written is a reconversion of the source: edits a repair patch made to the target
before the fallback are not carried over. On a full-integer target the patch holds no
precision edits (the flow leaves those to the fallback), and a clean TFLiteConverter
conversion has no other fault to patch.
"""

from __future__ import annotations

from pathlib import Path

from convdiff.core.errors import ConvdiffError
from convdiff.ir import tflite_quant
from convdiff.repair.fallback import Candidate, FallbackContext
from convdiff.runtime import client

MEASURE = "QuantizationDebugger rmse/rms (each layer's own output error over its float output)"
SOURCES = ("keras", "tf")  # what TFLiteConverter converts, so what can be reconverted
IO_TYPES = {"INT8": "int8", "UINT8": "uint8"}  # the file's input type -> its --tflite-io


def quantized_layers(ctx: FallbackContext) -> int:
    """How many layers of the target compute in integers (0 unless it is full-integer)."""
    if not tflite_quant.is_full_integer(ctx.target):
        return 0
    return len(tflite_quant.quantized_ops(ctx.target))


def candidates(ctx: FallbackContext) -> list[Candidate]:
    """Every quantized layer, with its error measured by the QuantizationDebugger on the
    images (a layer the debugger does not verify gets 0: nothing measured against it)."""
    _check_source(ctx)
    outcome = client.tflite_fallback_measure(
        ctx.pool,
        ctx.source_framework,
        ctx.source,
        ctx.images,
        ctx.layout,
        tflite_io(ctx.target),
        ctx.target,
    )
    if not outcome:
        raise ConvdiffError(
            f"TFLite's QuantizationDebugger could not measure {ctx.target.name}'s layers: "
            f"{outcome.error_type}: {outcome.message}",
            "see the tf worker's log in the repair folder's logs/",
        )
    measured = {row["layer"]: float(row["contribution"]) for row in outcome.value}
    if not measured:
        raise ConvdiffError(
            f"{ctx.target.name} is not the full-integer conversion of {ctx.source.name} that "
            "TFLiteConverter makes: none of its layers is one of the reconverted model's",
            "repair the .tflite against the Keras model or SavedModel it was converted from",
        )
    return [
        Candidate(op.name, measured.get(op.name, 0.0), MEASURE)
        for op in tflite_quant.quantized_ops(ctx.target)
    ]


def write(ctx: FallbackContext, layers: list[str], out: Path) -> Path:
    """The target reconverted from its source with ``layers`` (its own names) in float, the
    others quantized as before, in the target's input and output type."""
    _check_source(ctx)
    outcome = client.tflite_fallback_write(
        ctx.pool,
        ctx.source_framework,
        ctx.source,
        ctx.images,
        ctx.layout,
        tflite_io(ctx.target),
        ctx.target,
        layers,
        out,
    )
    if not outcome:
        raise ConvdiffError(
            f"TFLite's QuantizationDebugger could not write {ctx.target.name} with "
            f"{len(layers)} layer(s) in float: {outcome.error_type}: {outcome.message}",
            "see the tf worker's log in the repair folder's logs/",
        )
    return Path(outcome.value["path"])


def tflite_io(target: Path) -> str:
    """The target's ``--tflite-io``: its input tensor's type (int8, uint8, else float)."""
    model = tflite_quant.unpack(target)
    graph = model.subgraphs[0]
    kind = tflite_quant.type_name(graph.tensors[int(graph.inputs[0])].type)
    return IO_TYPES.get(kind, "float")


def _check_source(ctx: FallbackContext) -> None:
    if ctx.source_framework not in SOURCES:
        raise ConvdiffError(
            f"the float fallback of a full-integer .tflite reconverts its float source with "
            f"TFLiteConverter, which converts Keras models and SavedModels; {ctx.source.name} "
            f"is a {ctx.source_framework} model",
            "repair the .tflite against the Keras model or SavedModel it was converted from",
        )


__all__ = ["MEASURE", "candidates", "quantized_layers", "tflite_io", "write"]
