"""Every option of a run checked before any work: one line naming the problem and the fix,
exit 2 -- never a value silently ignored, a NaN that passes every threshold, or a converter
crash that was really the user's input."""

from __future__ import annotations

import math

from convdiff.commands.run.types import RunConfig
from convdiff.converters import ConverterInfo
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import (
    ORT_QUANTS,
    TARGET_PREPROCESS,
    TFLITE_IO,
    TFLITE_OPTS,
    TORCH_EXPORTERS,
    ConvertOptions,
    ImageOptions,
    PreprocessOptions,
    WorkerOptions,
    group_of,
)
from convdiff.inputs.source import SourceSpec

DYNAMO_MIN_OPSET = 18  # torch.onnx's dynamo exporter writes opset 18 or later


def check_run_config(config: RunConfig, source: SourceSpec, chain: list[ConverterInfo]) -> None:
    """Raise :class:`ConvdiffError` for the first option that cannot apply to this run."""
    for group in (ImageOptions, PreprocessOptions, WorkerOptions):
        group_of(group, config).check()
    if config.target_preprocess not in TARGET_PREPROCESS:
        raise ConvdiffError(
            f"unknown target preprocessing {config.target_preprocess!r}",
            f"use one of: {', '.join(TARGET_PREPROCESS)}",
        )
    batch = config.stream_batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConvdiffError(
            f"--stream-batch must be 1 or more, got {batch!r}", "pass e.g. --stream-batch 64"
        )
    limit = config.max_discrepancy
    if not (isinstance(limit, int | float) and math.isfinite(limit) and 0 <= limit <= 100):
        raise ConvdiffError(
            f"--max-discrepancy must be a percentage from 0 to 100, got {limit}",
            "pass e.g. --max-discrepancy 0",
        )
    _check_source_options(config, source)
    _check_convert_options(config, chain)


def _check_source_options(config: RunConfig, source: SourceSpec) -> None:
    """Weights belong to zoo models, preprocessing options to model files."""
    if source.file is not None and config.weights != "auto":
        raise ConvdiffError(
            f"--weights applies to zoo models; {source.file.name} brings its own weights",
            "drop --weights",
        )
    given = group_of(PreprocessOptions, config).given()
    if source.file is None and given:
        raise ConvdiffError(
            f"{given[0]} applies to a model file; the zoo's {source.name} brings its own "
            "preprocessing",
            f"drop {', '.join(given)}",
        )


def _check_convert_options(config: RunConfig, chain: list[ConverterInfo]) -> None:
    """Converter options that no converter of the chain would honour as given."""
    convert = config.convert
    if convert.tflite_opt not in TFLITE_OPTS:
        raise ConvdiffError(
            f"unknown --tflite-opt {convert.tflite_opt!r}", f"use one of: {', '.join(TFLITE_OPTS)}"
        )
    if convert.torch_exporter not in TORCH_EXPORTERS:
        raise ConvdiffError(
            f"unknown --torch-exporter {convert.torch_exporter!r}",
            f"use one of: {', '.join(TORCH_EXPORTERS)}",
        )
    if convert.tflite_io not in TFLITE_IO:
        raise ConvdiffError(
            f"unknown --tflite-io {convert.tflite_io!r}", f"use one of: {', '.join(TFLITE_IO)}"
        )
    if convert.tflite_io != "float" and convert.tflite_opt != "int8":
        raise ConvdiffError(
            f"--tflite-io {convert.tflite_io} sets the input type of a full-integer model",
            "add --tflite-opt int8, or drop --tflite-io",
        )
    if convert.ort_quant not in ORT_QUANTS:
        raise ConvdiffError(
            f"unknown --ort-quant {convert.ort_quant!r}", f"use one of: {', '.join(ORT_QUANTS)}"
        )
    unread = [
        (flag, value)
        for flag, field, value in (
            ("--tflite-opt", "tflite_opt", convert.tflite_opt),
            ("--torch-exporter", "torch_exporter", convert.torch_exporter),
        )
        if value != getattr(ConvertOptions(), field)
        and not any(field in edge.options for edge in chain)
    ]
    if unread:
        flag, value = unread[0]
        raise ConvdiffError(
            f"{flag} {value} is an option of a converter this run does not use "
            f"(route: {' -> '.join([chain[0].src, *(e.dst for e in chain)])})",
            f"drop {flag}, or choose a route through that converter",
        )
    exports = any(edge.src == "torch" and edge.dst == "onnx" for edge in chain)
    opset = convert.opset
    if exports and convert.torch_exporter == "dynamo" and opset and opset < DYNAMO_MIN_OPSET:
        raise ConvdiffError(
            f"--opset {opset} is below what torch's dynamo exporter writes ({DYNAMO_MIN_OPSET} "
            "or later): the file would say another opset than the report",
            f"pass --opset {DYNAMO_MIN_OPSET} or later, or --torch-exporter torchscript",
        )


__all__ = ["check_run_config"]
