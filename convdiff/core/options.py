"""Option groups shared by the commands, as frozen dataclasses, each default written once.

Why groups: `run`, `localize`, `repair`, `table` and `check` take the same image and
preprocessing options; declared once here, the CLI parses each group once and every command's
config holds the same fields under the same names (``dataclasses.asdict(group)`` fills them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from convdiff.core.errors import ConvdiffError

TFLITE_OPTS = ("none", "dynamic-range", "float16", "int8")
TFLITE_IO = ("float", "int8", "uint8")  # input/output type of a full-integer TFLite model
ORT_QUANTS = ("none", "dynamic", "static-qdq")  # onnxruntime.quantization on an ONNX target
TORCH_EXPORTERS = ("dynamo", "torchscript")
WEIGHT_POLICIES = ("auto", "imagenet", "random")  # or a path to a weights file
TARGET_PREPROCESS = ("source", "target")  # what the target is fed: see RunConfig
DEFAULT_TIMEOUT = 1800.0  # seconds a worker task may take (a big conversion takes minutes)
DEFAULT_BATCH_SIZE = 8  # images per inference call
# images decoded and fed to every model per step of a run: the unit of streaming and resuming
DEFAULT_STREAM_BATCH = 64
EXAMPLES = {"mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
MAX_SIDE = 4096  # the largest image side convdiff prepares (a batch of 8 is then 1.6 GB)
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds


@dataclass(frozen=True)
class ConvertOptions:
    """Every converter option convdiff exposes; each converter declares which ones it reads.

    tflite_opt: TFLiteConverter optimization (dynamic-range = ``Optimize.DEFAULT``, the
    setting of the published study; int8 = full-integer, calibrated on the run's images).
    tflite_io: the input and output type of a full-integer model. opset: ONNX opset for
    exporters (None = the tool's default). torch_exporter: ``torch.onnx.export(dynamo=...)``.
    ort_quant: quantize the ONNX target with onnxruntime (static-qdq calibrates on the run's
    images).

    Two fields choose the chain rather than a tool's behaviour: ``converters`` names the tools
    to use where an edge has several (``--converter``), ``tool_versions`` the releases to run
    in environments of their own (``--tool-version tf2onnx==1.16.1``).
    """

    tflite_opt: str = "none"
    opset: int | None = None
    torch_exporter: str = "dynamo"
    tflite_io: str = "float"
    ort_quant: str = "none"
    converters: tuple[str, ...] = ()
    tool_versions: tuple[str, ...] = ()

    def __post_init__(self) -> None:  # from JSON the chain fields arrive as lists
        for name in ("converters", "tool_versions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def as_dict(self, only: tuple[str, ...] | None = None) -> dict[str, object]:
        values = asdict(self)
        return values if only is None else {k: values[k] for k in only}


@dataclass(frozen=True)
class ImageOptions:
    """Which images: an image folder and its labels, or the embedded sample set; all of them,
    a stratified random sample, or the first few.

    ``seed`` seeds the sample; `run` and `table` seed random weights with it too (one
    ``--seed`` option: a run is reproduced by one number)."""

    data: Path | None = None  # image folder; None = the embedded sample set
    labels: Path | None = None  # labels file for an image folder
    limit: int | None = None  # use at most this many images (the first ones)
    sample: int | None = None  # a stratified random sample of this many (inputs.sampling)
    seed: int = 0

    def check(self) -> None:
        """One line and exit 2 for options that cannot mean anything, before any work."""
        if self.labels is not None and self.data is None:
            raise ConvdiffError(
                "--labels needs --data: the embedded sample set has labels of its own",
                "pass --data DIR with --labels, or drop --labels",
            )
        if self.limit is not None and (not _is_int(self.limit) or self.limit < 1):
            raise ConvdiffError(f"--limit must be 1 or more, got {self.limit}", "pass --limit 16")
        if self.sample is not None and (not _is_int(self.sample) or self.sample < 1):
            raise ConvdiffError(
                f"--sample must be 1 or more, got {self.sample}", "pass e.g. --sample 500"
            )
        if not _is_int(self.seed):
            raise ConvdiffError(f"--seed must be an integer, got {self.seed!r}", "pass --seed 0")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConvdiffError(
                f"--seed must be from 0 to {MAX_SEED}, got {self.seed}", "pass e.g. --seed 0"
            )


@dataclass(frozen=True)
class PreprocessOptions:
    """How a user's model file is fed (a zoo model brings its own spec): a preset and the
    values that override it. Resolved against the model's input by
    :func:`convdiff.inputs.spec.resolve_spec`."""

    preprocess: str | None = None  # preset name: imagenet | inception | caffe
    input_size: tuple[int, int] | None = None  # H, W
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    layout: str | None = None  # NCHW | NHWC
    resize: str | None = None  # stretch | center-crop

    def given(self) -> list[str]:
        """The options set, as their command-line flags."""
        flags = {"preprocess": "--preprocess", "input_size": "--input-size"}
        return [flags.get(f.name, f"--{f.name}") for f in fields(self) if getattr(self, f.name)]

    def check(self) -> None:
        """One line and exit 2 for values no model can take, before any work."""
        if self.input_size is not None:
            size = tuple(self.input_size)
            if len(size) != 2 or not all(_is_int(v) and 0 < v <= MAX_SIDE for v in size):
                raise ConvdiffError(
                    f"--input-size must be two integers from 1 to {MAX_SIDE}, got "
                    f"{','.join(str(v) for v in size)}",
                    "pass the model's own input size, e.g. --input-size 224,224",
                )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is None:
                continue
            numbers = tuple(values)
            finite = len(numbers) == 3 and all(_is_number(v) for v in numbers)
            if not finite or (name == "std" and min(numbers) <= 0):
                kind = "positive numbers" if name == "std" else "finite numbers"
                raise ConvdiffError(
                    f"--{name} needs 3 {kind} (R,G,B in units of pixel/255), got "
                    f"{','.join(str(v) for v in numbers)}",
                    f"pass e.g. --{name} {EXAMPLES[name]}",
                )


@dataclass(frozen=True)
class WorkerOptions:
    """How the workers run: seconds a task may take, images per inference call."""

    timeout: float = DEFAULT_TIMEOUT
    batch_size: int = DEFAULT_BATCH_SIZE

    def check(self) -> None:
        """One line and exit 2 for a timeout or batch size that cannot work."""
        if not _is_number(self.timeout) or self.timeout <= 0:
            raise ConvdiffError(
                f"--timeout must be a positive number of seconds, got {self.timeout}",
                f"pass e.g. --timeout {DEFAULT_TIMEOUT:g}",
            )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConvdiffError(
                f"--batch-size must be 1 or more, got {self.batch_size}",
                f"pass e.g. --batch-size {DEFAULT_BATCH_SIZE}",
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def group_of(group: type, config: Any) -> Any:
    """The option ``group``'s fields read from a command's ``config`` (which holds them flat)."""
    return group(**{f.name: getattr(config, f.name) for f in fields(group)})


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_SEED",
    "TARGET_PREPROCESS",
    "ORT_QUANTS",
    "TFLITE_IO",
    "TFLITE_OPTS",
    "TORCH_EXPORTERS",
    "WEIGHT_POLICIES",
    "ConvertOptions",
    "ImageOptions",
    "PreprocessOptions",
    "WorkerOptions",
    "group_of",
]
