"""The frameworks convdiff loads and runs, described without importing any of them.

Each framework has a child-side module (``convdiff.frameworks.<name>``) with the same small
contract, run only inside a worker of the named kind:

    load(path: str) -> model
    describe(model) -> {"input_shape": [...], "input_dtype": str, "output_shape": [...]}
    predict(model, batch: np.ndarray) -> np.ndarray   # batch in the model's own layout

This module holds what the orchestrator needs: names, worker kinds, file detection, versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from convdiff.core.errors import ConvdiffError


@dataclass(frozen=True)
class FrameworkInfo:
    name: str
    title: str  # how a person names it
    worker: str  # worker kind that may import it
    package: str  # the distribution whose version identifies the runtime
    layout: str  # customary input layout: NHWC or NCHW
    suffixes: tuple[str, ...]  # model file suffixes; "" stands for a SavedModel folder

    @property
    def module(self) -> str:
        return f"convdiff.frameworks.{self.name}"

    def version(self) -> str:
        return package_version(self.package)


FRAMEWORKS: dict[str, FrameworkInfo] = {
    info.name: info
    for info in (
        FrameworkInfo("keras", "Keras 3", "tf", "keras", "NHWC", (".keras", ".h5")),
        FrameworkInfo("tf", "TensorFlow SavedModel", "tf", "tensorflow", "NHWC", ("",)),
        FrameworkInfo(
            "tflite", "TFLite (LiteRT)", "litert", "ai-edge-litert", "NHWC", (".tflite",)
        ),
        FrameworkInfo("onnx", "ONNX (onnxruntime)", "onnx", "onnxruntime", "NCHW", (".onnx",)),
        FrameworkInfo("torch", "PyTorch", "torch", "torch", "NCHW", (".pt2", ".pt", ".pth")),
    )
}


def framework(name: str) -> FrameworkInfo:
    """Look a framework up by name, or say which names exist."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ConvdiffError(
            f"unknown framework {name!r}",
            f"use one of: {', '.join(FRAMEWORKS)}",
        ) from None


def detect_framework(path: Path) -> str:
    """The framework of a model file from its suffix (a folder with saved_model.pb is ``tf``)."""
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "tf"
        raise ConvdiffError(
            f"{path} is a folder without saved_model.pb",
            "give a SavedModel folder or a model file (.keras, .h5, .tflite, .onnx, .pt2, .pt)",
        )
    suffix = path.suffix.lower()
    for info in FRAMEWORKS.values():
        if suffix and suffix in info.suffixes:
            return info.name
    raise ConvdiffError(
        f"cannot tell the framework of {path.name} from its suffix {suffix or '(none)'}",
        "use .keras/.h5, a SavedModel folder, .tflite, .onnx or .pt2/.pt, or pass --src",
    )


def package_version(distribution: str) -> str:
    """Installed version of a distribution, read from its metadata without importing it."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def layout_of(input_shape: list[int | None] | tuple[int | None, ...], default: str) -> str:
    """NCHW or NHWC from a 4-D input shape; the framework's habit when the shape can't tell."""
    if len(input_shape) != 4:
        return default
    channels_first, channels_last = input_shape[1] in (1, 3), input_shape[3] in (1, 3)
    if channels_first and not channels_last:
        return "NCHW"
    if channels_last and not channels_first:
        return "NHWC"
    return default
