"""Option groups shared by the commands, as frozen dataclasses, each default written once.

Why groups: `run`, `localize`, `repair`, `table` and `check` take the same image and
preprocessing options; declared once here, the CLI parses each group once and every command's
config holds the same fields under the same names (``dataclasses.asdict(group)`` fills them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

TFLITE_OPTS = ("none", "dynamic-range", "float16")
TORCH_EXPORTERS = ("dynamo", "torchscript")
WEIGHT_POLICIES = ("auto", "imagenet", "random")  # or a path to a weights file
TARGET_PREPROCESS = ("source", "target")  # what the target is fed: see RunConfig
DEFAULT_TIMEOUT = 1800.0  # seconds a worker task may take (a big conversion takes minutes)
DEFAULT_BATCH_SIZE = 8  # images per inference call


@dataclass(frozen=True)
class ConvertOptions:
    """Every converter option convdiff exposes; each converter declares which ones it reads.

    tflite_opt: TFLiteConverter optimization (dynamic-range = ``Optimize.DEFAULT``, the
    setting of the published study). opset: ONNX opset for exporters (None = the tool's
    default). torch_exporter: ``torch.onnx.export(dynamo=...)``.
    """

    tflite_opt: str = "none"
    opset: int | None = None
    torch_exporter: str = "dynamo"

    def as_dict(self, only: tuple[str, ...] | None = None) -> dict[str, object]:
        values = asdict(self)
        return values if only is None else {k: values[k] for k in only}


@dataclass(frozen=True)
class ImageOptions:
    """Which images: an image folder and its labels, or the embedded sample set."""

    data: Path | None = None  # image folder; None = the embedded sample set
    labels: Path | None = None  # labels file for an image folder
    limit: int | None = None  # use at most this many images


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


@dataclass(frozen=True)
class WorkerOptions:
    """How the workers run: seconds a task may take, images per inference call."""

    timeout: float = DEFAULT_TIMEOUT
    batch_size: int = DEFAULT_BATCH_SIZE


def group_of(group: type, config: Any) -> Any:
    """The option ``group``'s fields read from a command's ``config`` (which holds them flat)."""
    return group(**{f.name: getattr(config, f.name) for f in fields(group)})


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TIMEOUT",
    "TARGET_PREPROCESS",
    "TFLITE_OPTS",
    "TORCH_EXPORTERS",
    "WEIGHT_POLICIES",
    "ConvertOptions",
    "ImageOptions",
    "PreprocessOptions",
    "WorkerOptions",
    "group_of",
]
