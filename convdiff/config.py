"""Options of a run, as frozen dataclasses with their defaults in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

TFLITE_OPTS = ("none", "dynamic-range", "float16")
TORCH_EXPORTERS = ("dynamo", "torchscript")
WEIGHT_POLICIES = ("auto", "imagenet", "random")  # or a path to a weights file
TARGET_PREPROCESS = ("source", "target")  # what the target is fed: see RunConfig


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
class RunConfig:
    """One `convdiff run`: what to convert, on which images, and what counts as agreement."""

    model: str  # zoo name or path to a model file
    src: str | None = None  # framework of the source; detected from a file when None
    dst: str = "tflite"
    via: tuple[str, ...] = ()  # forced intermediate frameworks
    weights: str = "auto"
    seed: int = 0
    data: Path | None = None  # image folder; None = the embedded sample set
    labels: Path | None = None  # labels file for an image folder
    limit: int | None = None  # use at most this many images
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    preprocess: str | None = None  # preset name for a user's model file
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    layout: str | None = None  # NCHW | NHWC for a user's model file
    resize: str | None = None  # stretch | center-crop
    max_discrepancy: float = 0.0  # percent of top-1 labels allowed to differ
    out: Path | None = None  # run folder; None = ./convdiff-runs/<model>-<src>-<dst>-<time>
    cache_dir: Path | None = None  # converted-artifact cache; None = ~/.cache/convdiff
    use_cache: bool = True
    timeout: float = 1800.0  # seconds per worker task
    batch_size: int = 8
    # "source": the target gets the source's input tensor; "target": the last hop gets its own
    # framework's customary preprocessing (convdiff.run.target_spec), saved as x-target.npz
    target_preprocess: str = "source"
    localize: bool = False  # localize the last artifact after the run (convdiff.followup)
    repair: bool = False  # repair the last artifact after the run (localizes it too)
