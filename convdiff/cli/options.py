"""Click options that several commands share, each declared once, and the option groups
(:mod:`convdiff.core.options`) built from what click parsed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from convdiff.core.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TIMEOUT,
    ORT_QUANTS,
    TFLITE_IO,
    TFLITE_OPTS,
    TORCH_EXPORTERS,
    ConvertOptions,
    ImageOptions,
    PreprocessOptions,
)
from convdiff.frameworks import FRAMEWORKS

PRESETS = ["imagenet", "inception", "caffe"]


class Numbers(click.ParamType):
    """A comma-separated list of ``count`` numbers, e.g. ``299,299`` or ``0.5,0.5,0.5``."""

    def __init__(self, count: int, kind: type, example: str) -> None:
        self.count, self.kind, self.example = count, kind, example
        self.name = f"{count} comma-separated numbers"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(self.kind(p) for p in str(value).split(","))
        except ValueError:
            parts = ()
        if len(parts) != self.count:
            self.fail(
                f"{value!r} is not {self.count} comma-separated numbers (e.g. {self.example})"
            )
        return parts


def frameworks_choice() -> click.Choice:
    return click.Choice(list(FRAMEWORKS), case_sensitive=False)


def apply(options: list[Callable], command: Callable) -> Callable:
    """Decorate ``command`` with ``options``, the first one outermost (as written above it)."""
    for option in reversed(options):
        command = option(command)
    return command


def image_options(command: Callable) -> Callable:
    """--data, --labels, --limit, --sample (:class:`~convdiff.core.options.ImageOptions`; its
    ``seed`` comes from :func:`seed_option`, which every command with these options has)."""
    return apply(
        [
            click.option(
                "--data",
                type=click.Path(path_type=Path),
                help="Image folder: images, class subfolders (index, name or WordNet id), or "
                "ImageNet's flat validation folder with --labels (default: the embedded "
                "sample set).",
            ),
            click.option(
                "--labels",
                type=click.Path(path_type=Path),
                help="Labels file for --data: '<file> <class>' lines (Caffe's val.txt), "
                "LOC_val_solution.csv, the devkit's ILSVRC2012_validation_ground_truth.txt "
                "(meta.mat beside it) or LOC_synset_mapping.txt.",
            ),
            click.option(
                "--limit", type=click.IntRange(min=1), help="Use the first N readable images."
            ),
            click.option(
                "--sample",
                type=click.IntRange(min=1),
                help="Use a random sample of N images, stratified by class, chosen by --seed "
                "before the files are read (unreadable picks are skipped, not replaced).",
            ),
        ],
        command,
    )


def seed_option(help_text: str) -> Callable[[Callable], Callable]:
    """--seed, whose help says what the command seeds with it (--sample's pick, and in run
    and table random weights too)."""
    return click.option("--seed", default=0, show_default=True, type=int, help=help_text)


def preprocessing_options(command: Callable) -> Callable:
    """The preprocessing options of a model file
    (:class:`~convdiff.core.options.PreprocessOptions`)."""
    return apply(
        [
            click.option(
                "--preprocess",
                "preset",
                type=click.Choice(PRESETS),
                help="Preprocessing preset for a model file.",
            ),
            click.option(
                "--input-size", type=Numbers(2, int, "299,299"), help="H,W for a model file."
            ),
            click.option(
                "--mean", type=Numbers(3, float, "0.485,0.456,0.406"), help="R,G,B in 0..1."
            ),
            click.option(
                "--std", type=Numbers(3, float, "0.229,0.224,0.225"), help="R,G,B in 0..1."
            ),
            click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False)),
            click.option("--resize", type=click.Choice(["stretch", "center-crop"])),
        ],
        command,
    )


def trust_option(command: Callable) -> Callable:
    return click.option(
        "--trust-model-code",
        is_flag=True,
        help="Load model files that run code when they load (Keras Lambda layers, pickled "
        "torch objects). Only for files you trust: such code can do anything.",
    )(command)


def timeout_option(command: Callable) -> Callable:
    return click.option(
        "--timeout", default=DEFAULT_TIMEOUT, show_default=True, help="Seconds per worker task."
    )(command)


def executor_options(command: Callable) -> Callable:
    """--executor and --address: where the runs of a table or a check execute."""
    return apply(
        [
            click.option(
                "--executor",
                type=click.Choice(["local", "ray"]),
                default="local",
                show_default=True,
                help="local: this machine; ray: one Ray task per run on a Ray cluster (needs "
                "pip install 'convdiff[ray]' on every node, and --out/--cache-dir on a path "
                "every node sees; each task asks Ray for its run's memory estimate).",
            ),
            click.option(
                "--address",
                help="--executor ray: the cluster, as HOST:PORT of its head (ray start --head), "
                "ray://HOST:PORT or auto (default: a local Ray cluster on this machine).",
            ),
        ],
        command,
    )


def batch_size_option(command: Callable) -> Callable:
    return click.option(
        "--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(min=1)
    )(command)


def images(options: dict[str, Any]) -> dict[str, Any]:
    """The image fields of a command's config, from what click parsed."""
    group = ImageOptions(
        options["data"], options["labels"], options["limit"], options["sample"], options["seed"]
    )
    return asdict(group)


def preprocessing(options: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing fields of a command's config, from what click parsed."""
    layout = options["layout"].upper() if options["layout"] else None
    group = PreprocessOptions(
        options["preset"],
        options["input_size"],
        options["mean"],
        options["std"],
        layout,
        options["resize"],
    )
    return asdict(group)


def converter_options(command: Callable) -> Callable:
    """The converter options of run (and of a table's columns): one place, one spelling."""
    for decorator in reversed(
        (
            click.option(
                "--tflite-opt",
                type=click.Choice(TFLITE_OPTS),
                default="none",
                show_default=True,
                help="TFLiteConverter optimization (dynamic-range is the published study's "
                "setting; int8 = full-integer, calibrated on the run's images).",
            ),
            click.option(
                "--tflite-io",
                type=click.Choice(TFLITE_IO),
                default="float",
                show_default=True,
                help="Input and output type of a full-integer (--tflite-opt int8) model.",
            ),
            click.option(
                "--ort-quant",
                type=click.Choice(ORT_QUANTS),
                default="none",
                show_default=True,
                help="Quantize the ONNX target with onnxruntime (static-qdq calibrates on the "
                "run's images).",
            ),
            click.option("--opset", type=click.IntRange(7, 23), help="ONNX opset for exporters."),
            click.option(
                "--torch-exporter",
                type=click.Choice(TORCH_EXPORTERS),
                default="dynamo",
                show_default=True,
            ),
            click.option(
                "--converter",
                "converters",
                multiple=True,
                help="Use this tool where an edge has several (e.g. onnx2tf, litert-torch, "
                "onnx2keras); repeatable.",
            ),
            click.option(
                "--tool-version",
                "tool_versions",
                multiple=True,
                help="Run a converter at this release, in an environment of its own "
                "(e.g. tf2onnx==1.16.1); repeatable.",
            ),
        )
    ):
        command = decorator(command)
    return command


def convert_options(options: dict[str, Any]) -> ConvertOptions:
    """The :class:`ConvertOptions` that :func:`converter_options` parsed."""
    return ConvertOptions(
        tflite_opt=options["tflite_opt"],
        opset=options["opset"],
        torch_exporter=options["torch_exporter"],
        tflite_io=options["tflite_io"],
        ort_quant=options["ort_quant"],
        converters=tuple(options["converters"]),
        tool_versions=tuple(options["tool_versions"]),
    )


def split(text: str, lower: bool = False) -> tuple[str, ...]:
    """``a, b,,c`` -> ``("a", "b", "c")``."""
    parts = (p.strip() for p in text.split(","))
    return tuple(p.lower() if lower else p for p in parts if p)


__all__ = [
    "Numbers",
    "apply",
    "batch_size_option",
    "convert_options",
    "converter_options",
    "executor_options",
    "frameworks_choice",
    "image_options",
    "images",
    "preprocessing",
    "preprocessing_options",
    "seed_option",
    "split",
    "timeout_option",
]
