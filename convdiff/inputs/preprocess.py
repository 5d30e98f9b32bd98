"""Per-model, per-framework input preprocessing, stated as data so the report can print it.

Every pipeline is ``(pixel / 255 - mean) / std`` on an RGB image resized to ``size``, then an
optional RGB->BGR swap. ``mean`` and ``std`` are always given in R, G, B order. The tensor is
built in NHWC; ``layout`` says what the model expects and the worker transposes at the model's
boundary, so both sides of a comparison get the very same decoded and resized pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from convdiff.core.errors import ConvdiffError
from convdiff.inputs.data import ImageRecord, decode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68 / 255, 116.779 / 255, 103.939 / 255)


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int]  # model input height, width
    resize: str = "stretch"  # stretch | center-crop
    crop_fraction: float = 0.875  # center-crop: resize the short side to size / fraction
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: str = "RGB"  # RGB | BGR
    layout: str = "NHWC"  # NHWC | NCHW, what the model takes
    name: str = "custom"
    interpolation: str = "bilinear"  # bilinear | bicubic: PIL's filter for the resize

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_report(cls, preprocessing: dict[str, Any]) -> PreprocessSpec | None:
        """The spec a run recorded (``report.preprocessing``: its fields and a description);
        None when it recorded none."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in preprocessing.items() if k in names}
        if "size" not in values:
            return None
        for key in ("size", "mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def describe(self) -> str:
        """One line for the terminal, e.g.
        ``inception 299x299 stretch, (x/255-[0.5,0.5,0.5])/[0.5,0.5,0.5], RGB, NHWC``."""
        h, w = self.size
        crop = f"center-crop {self.crop_fraction:g}" if self.resize == "center-crop" else "stretch"
        if self.interpolation != "bilinear":
            crop += f" {self.interpolation}"
        mean = ",".join(f"{m:.4g}" for m in self.mean)
        std = ",".join(f"{s:.4g}" for s in self.std)
        return (
            f"{self.name} {h}x{w} {crop}, (x/255-[{mean}])/[{std}], {self.channels}, {self.layout}"
        )


PRESETS: dict[str, PreprocessSpec] = {
    # torchvision's ImageNet evaluation transform
    "imagenet": PreprocessSpec(
        (224, 224), "center-crop", 0.875, IMAGENET_MEAN, IMAGENET_STD, "RGB", "NCHW", "imagenet"
    ),
    # keras.applications 'tf' mode (MobileNetV2, InceptionV3): scale to [-1, 1]
    "inception": PreprocessSpec(
        (299, 299), "stretch", 0.875, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "RGB", "NHWC", "inception"
    ),
    # keras.applications 'caffe' mode (ResNet): BGR, mean subtracted, no scaling
    "caffe": PreprocessSpec(
        (224, 224),
        "stretch",
        0.875,
        CAFFE_MEAN_RGB,
        (1 / 255, 1 / 255, 1 / 255),
        "BGR",
        "NHWC",
        "caffe",
    ),
}


def preset(name: str, **overrides: object) -> PreprocessSpec:
    """A named preset with some fields replaced (e.g. ``size=(224, 224)``)."""
    return replace(PRESETS[name], **overrides)


RESIZE_MODES = ("stretch", "center-crop")
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
LAYOUTS = ("NCHW", "NHWC")


def _resized(spec: PreprocessSpec, image: Image.Image) -> Image.Image:
    """Resize (and crop) to ``spec.size`` the way torchvision's eval transform does.

    center-crop: the short side becomes ``round(max(h, w) / crop_fraction)`` and the long side
    keeps the aspect ratio truncated to an integer (``transforms.Resize(int)``); then the centre
    ``h x w`` is cut with ``CenterCrop``'s rounding. Using the larger of h and w means the crop
    always fits, and for the usual square size it is exactly torchvision's Resize(256) +
    CenterCrop(224).
    """
    h, w = spec.size
    if spec.interpolation not in INTERPOLATIONS:
        raise ConvdiffError(
            f"unknown interpolation {spec.interpolation!r}", f"use one of {tuple(INTERPOLATIONS)}"
        )
    resample = INTERPOLATIONS[spec.interpolation]
    if spec.resize == "stretch":
        return image.resize((w, h), resample)
    width, height = image.size
    short = round(max(h, w) / spec.crop_fraction)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    image = image.resize((new_w, new_h), resample)
    top = int(round((new_h - h) / 2.0))
    left = int(round((new_w - w) / 2.0))
    return image.crop((left, top, left + w, top + h))


def apply(spec: PreprocessSpec, rgb: np.ndarray) -> np.ndarray:
    """One decoded image (uint8 HxWx3 RGB) as the model's float32 HxWx3 input (always NHWC).

    The arithmetic is torchvision's (``ToTensor`` then ``Normalize``) in float32:
    ``(x / 255 - mean) / std`` with mean and std in RGB order, then the channel swap for a BGR
    model. ``spec.layout`` is not applied here but at the model boundary.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    if spec.resize not in RESIZE_MODES:
        raise ConvdiffError(f"unknown resize mode {spec.resize!r}", f"use one of {RESIZE_MODES}")
    pixels = np.asarray(_resized(spec, Image.fromarray(rgb, "RGB")), dtype=np.uint8)
    x = pixels.astype(np.float32) / np.float32(255)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.channels == "BGR":
        x = x[..., ::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def batch(spec: PreprocessSpec, records: Sequence[ImageRecord]) -> np.ndarray:
    """The images of ``records`` as one float32 (N, H, W, 3) array, each decoded once."""
    h, w = spec.size
    out = np.empty((len(records), h, w, 3), np.float32)
    for i, record in enumerate(records):
        out[i] = apply(spec, decode(record))
    return out


_EXAMPLE = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _three(option: str, values: Sequence[float]) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise ConvdiffError(
            f"--{option} needs 3 numbers (R,G,B), got {values!r}",
            f"pass e.g. --{option} {','.join(f'{v:g}' for v in _EXAMPLE[option])}",
        )
    return numbers  # type: ignore[return-value]


def from_options(
    base: PreprocessSpec | None,
    preset: str | None = None,
    input_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: str | None = None,
    resize: str | None = None,
) -> PreprocessSpec:
    """The preprocessing for a user's model file, from the CLI options.

    Start from the named ``preset`` (else ``base``, else plain ``x/255`` at ``input_size``),
    then let each given option replace its field. Mean and std are in units of pixel/255, in
    RGB order.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise ConvdiffError(
                f"unknown preprocessing preset {preset!r}",
                f"use one of: {', '.join(PRESETS)}",
            )
        spec = PRESETS[preset]
    elif base is not None:
        spec = base
    elif input_size is not None:
        spec = PreprocessSpec(size=(1, 1))  # size replaced below
    else:
        raise ConvdiffError(
            "the preprocessing needs an input size", "pass --input-size H,W or --preprocess NAME"
        )
    changes: dict[str, object] = {}
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise ConvdiffError(
                f"--input-size must be two positive integers H,W, got {input_size!r}",
                "pass e.g. --input-size 224,224",
            )
        changes["size"] = size
    if mean is not None:
        values = _three("mean", mean)
        if any(abs(v) > 1 for v in values):
            raise ConvdiffError(
                f"--mean {','.join(f'{v:g}' for v in values)} is not in units of pixel/255",
                "divide by 255 (e.g. 123.68 -> 0.485)",
            )
        changes["mean"] = values
    if std is not None:
        values = _three("std", std)
        if any(v == 0 for v in values):
            raise ConvdiffError("--std must not contain 0", "pass e.g. --std 0.229,0.224,0.225")
        changes["std"] = values
    if layout is not None:
        if layout.upper() not in LAYOUTS:
            raise ConvdiffError(f"unknown layout {layout!r}", "use NCHW or NHWC")
        changes["layout"] = layout.upper()
    if resize is not None:
        if resize not in RESIZE_MODES:
            raise ConvdiffError(f"unknown resize mode {resize!r}", "use stretch or center-crop")
        changes["resize"] = resize
    changed = {k: v for k, v in changes.items() if getattr(spec, k) != v}
    if not changed:
        return spec
    named = spec.name if preset is not None or base is not None else ""
    return replace(spec, **changed, name=f"{named}+custom" if named else "custom")
