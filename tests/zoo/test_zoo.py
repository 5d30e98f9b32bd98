"""The model zoo: the catalog (fast, no framework) and real builds (slow, in workers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convdiff.core.errors import ConvdiffError, UnknownModelError
from convdiff.inputs.preprocess import apply
from convdiff.runtime import client
from convdiff.runtime.pool import TaskOutcome, WorkerPool
from convdiff.zoo import ZooVariant, weights_plan, zoo_model, zoo_names
from tests.helpers import ROOT, infer

SKIMAGE_DATA = Path(sys.prefix) / "lib" / "python3.11" / "site-packages" / "skimage" / "data"
PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg")
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


# -- catalog ---------------------------------------------------------------------------------


def test_names_and_frameworks() -> None:
    assert zoo_names() == [
        "mobilenetv2",
        "resnet101",
        "inceptionv3",
        "convnext_tiny",
        "efficientnetv2_b0",
        "efficientnet_lite0",
    ]
    for name in ("mobilenetv2", "resnet101", "inceptionv3"):
        assert zoo_model(name).frameworks == ("keras", "tf", "torch")
    for name in ("convnext_tiny", "efficientnetv2_b0"):
        assert zoo_model(name).frameworks == ("keras", "tf")
    assert zoo_model("efficientnet_lite0").frameworks == ("torch",)
    assert {v.worker for v in zoo_model("mobilenetv2").variants.values()} == {"tf", "torch"}


def test_unknown_model_lists_the_zoo() -> None:
    with pytest.raises(UnknownModelError) as caught:
        zoo_model("vgg16")
    assert str(caught.value) == (
        "unknown model 'vgg16': not a zoo name and not a file; use a model file or one of: "
        "mobilenetv2, resnet101, inceptionv3, convnext_tiny, efficientnetv2_b0, "
        "efficientnet_lite0, timm:<any timm model>"
    )


def test_framework_not_offered() -> None:
    with pytest.raises(ConvdiffError) as caught:
        zoo_model("efficientnet_lite0").variant("keras")
    assert str(caught.value) == (
        "zoo model efficientnet_lite0 is not offered for framework 'keras'; use --src torch"
    )


@pytest.mark.parametrize(
    ("name", "framework", "shape", "size", "resize", "channels"),
    [
        ("mobilenetv2", "keras", [None, 224, 224, 3], (224, 224), "stretch", "RGB"),
        ("inceptionv3", "tf", [None, 299, 299, 3], (299, 299), "stretch", "RGB"),
        ("resnet101", "keras", [None, 224, 224, 3], (224, 224), "stretch", "BGR"),
        ("convnext_tiny", "keras", [None, 224, 224, 3], (224, 224), "stretch", "RGB"),
        ("efficientnetv2_b0", "tf", [None, 224, 224, 3], (224, 224), "stretch", "RGB"),
        ("mobilenetv2", "torch", [None, 3, 224, 224], (224, 224), "center-crop", "RGB"),
        ("inceptionv3", "torch", [None, 3, 299, 299], (299, 299), "center-crop", "RGB"),
        ("efficientnet_lite0", "torch", [None, 3, 224, 224], (224, 224), "center-crop", "RGB"),
    ],
)
def test_variant_shapes(
    name: str, framework: str, shape: list, size: tuple, resize: str, channels: str
) -> None:
    v = zoo_model(name).variant(framework)
    assert v.input_shape == shape
    assert v.num_classes == 1000
    assert (v.preprocess.size, v.preprocess.resize, v.preprocess.channels) == (
        size,
        resize,
        channels,
    )


def _pixel(variant: ZooVariant, rgb: tuple[int, int, int]) -> np.ndarray:
    """What one solid-colour image becomes under the variant's preprocessing."""
    image = np.empty((40, 50, 3), np.uint8)
    image[:] = rgb
    return apply(variant.preprocess, image)[0, 0]


def test_preprocessing_values() -> None:
    keras_mnv2 = zoo_model("mobilenetv2").variant("keras")
    assert np.allclose(_pixel(keras_mnv2, (0, 255, 51)), [-1.0, 1.0, -0.6], atol=1e-6)
    caffe = zoo_model("resnet101").variant("keras")  # BGR, minus the ImageNet mean, 0..255
    assert np.allclose(_pixel(caffe, (255, 0, 0)), [-103.939, -116.779, 255 - 123.68], atol=1e-3)
    for name in ("convnext_tiny", "efficientnetv2_b0"):  # the model normalizes: 0..255 in
        raw = zoo_model(name).variant("keras")
        assert raw.preprocess.name == "keras-raw-224"
        assert np.allclose(_pixel(raw, (255, 0, 51)), [255.0, 0.0, 51.0], atol=1e-4)
        assert (
            raw.builder
            == f"keras.applications.{'ConvNeXtTiny' if 'conv' in name else 'EfficientNetV2B0'}"
        )
    assert zoo_model("convnext_tiny").variant("tf").weights_origin == (
        "https://storage.googleapis.com/tensorflow/keras-applications/convnext/"
    )
    assert zoo_model("efficientnetv2_b0").variant("keras").weights_file == "efficientnetv2-b0.h5"
    lite = zoo_model("efficientnet_lite0").variant("torch")  # (x - 127) / 128
    assert np.allclose(_pixel(lite, (255, 127, 0)), [1.0, 0.0, -127 / 128], atol=1e-6)
    tv = zoo_model("mobilenetv2").variant("torch")
    assert np.allclose(
        _pixel(tv, (255, 255, 255)),
        [(1 - m) / s for m, s in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))],
        atol=1e-5,
    )
    # torchvision's transforms: Resize(232) + CenterCrop(224); inception Resize(342) + 299
    assert tv.preprocess.crop_fraction == 224 / 232
    assert zoo_model("inceptionv3").variant("torch").preprocess.crop_fraction == 299 / 342


def test_auto_weights_follow_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    plan = weights_plan("mobilenetv2", "torch", "auto")
    assert (plan.policy, plan.path) == ("random", None)
    assert plan.note == (
        f"ImageNet weights not at hand (mobilenet_v2-7ebf99e0.pth is not in "
        f"{tmp_path}/torch/hub/checkpoints); using seeded random weights, BatchNorm-calibrated"
    )
    cached = tmp_path / "keras" / "models" / "resnet101_weights_tf_dim_ordering_tf_kernels.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert weights_plan("resnet101", "keras", "auto").policy == "imagenet"
    assert weights_plan("resnet101", "tf", "auto").path == cached
    assert weights_plan("resnet101", "torch", "auto").policy == "random"


def test_efficientnet_lite0_weights_are_shipped() -> None:
    plan = weights_plan("efficientnet_lite0", "torch", "auto")
    assert plan.policy == "imagenet"
    assert plan.path is not None and plan.path.name == "efficientnet-lite0-57934424.pth"
    assert plan.path.stat().st_size == 18826032


def test_weights_file_policy(tmp_path: Path) -> None:
    with pytest.raises(ConvdiffError, match="weights file .*nope.pth does not exist"):
        weights_plan("mobilenetv2", "torch", str(tmp_path / "nope.pth"))
    given = tmp_path / "mine.pth"
    given.write_bytes(b"x")
    assert weights_plan("mobilenetv2", "torch", str(given)).to_dict() == {
        "policy": "file",
        "path": str(given),
        "note": "weights from mine.pth",
    }


@pytest.mark.parametrize("model", ["inceptionv3", "timm:resnet18"])
def test_catalog_imports_no_framework(model: str) -> None:
    """The catalog (the timm table too) is read without torch, timm or TF."""
    code = (
        f"import sys, convdiff.zoo; convdiff.zoo.weights_plan({model!r}, 'torch', 'auto'); "
        "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'tensorflow', 'keras') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def _build(
    pool: WorkerPool,
    name: str,
    framework: str,
    weights: str,
    out_dir: Path,
    calibration: Path | None = None,
) -> TaskOutcome:
    """Build a zoo model with seed 0; no calibration file: seeded noise calibrates BatchNorm."""
    return client.build(pool, name, framework, weights, 0, calibration or "", out_dir)


@pytest.mark.workers
def test_missing_imagenet_weights_name_the_file(tmp_path: Path) -> None:
    """No internet here: the build says which file to place where (TORCH_HOME is empty)."""
    env = {"TORCH_HOME": str(tmp_path / "torch-home")}
    with WorkerPool(tmp_path / "logs", timeout=300, extra_env=env) as own:
        outcome = _build(own, "mobilenetv2", "torch", "imagenet", tmp_path / "out")
    assert not outcome
    assert outcome.error_type == "ConvdiffError"
    target = tmp_path / "torch-home" / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth"
    assert outcome.message == (
        "ImageNet weights for mobilenetv2 (torch) are not cached and could not be downloaded "
        "(URLError); place mobilenet_v2-7ebf99e0.pth (from "
        "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth) at "
        f"{target}, or pass --weights PATH to a weights file, or --weights random"
    )


# -- real builds (slow) ----------------------------------------------------------------------


def _photos(variant: ZooVariant, path: Path) -> Path:
    images = [np.asarray(Image.open(SKIMAGE_DATA / name).convert("RGB")) for name in PHOTOS]
    np.savez(path, x=np.stack([apply(variant.preprocess, image) for image in images]))
    return path


def _noise(variant: ZooVariant, path: Path, seed: int, count: int = 8) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, 240, 320, 3), dtype=np.uint8)
    np.savez(path, x=np.stack([apply(variant.preprocess, image) for image in pixels]))
    return path


def _build_and_run(
    pool: WorkerPool,
    tmp_path: Path,
    name: str,
    framework: str,
    weights: str,
    images: Path,
    calibration: Path | None = None,
) -> tuple[dict, np.ndarray]:
    variant = zoo_model(name).variant(framework)
    built = _build(pool, name, framework, weights, tmp_path / f"{name}-{framework}", calibration)
    assert built, built.message
    out = tmp_path / f"{name}-{framework}-y.npz"
    layout = variant.preprocess.layout
    return built.value, infer(pool, framework, built.value["path"], images, out, layout=layout)


def _assert_not_degenerate(y: np.ndarray) -> None:
    """Different images must give different answers: at least two distinct top-1 labels and
    per-class outputs that move between images by a tenth of the largest output."""
    assert len(set(y.argmax(1).tolist())) >= 2, y.argmax(1)
    assert np.ptp(y, axis=0).max() > 0.1 * np.abs(y).max()


@pytest.mark.slow
def test_efficientnet_lite0_recognizes_the_cat(pool: WorkerPool, tmp_path: Path) -> None:
    variant = zoo_model("efficientnet_lite0").variant("torch")
    built, y = _build_and_run(
        pool, tmp_path, "efficientnet_lite0", "torch", "auto", _photos(variant, tmp_path / "p.npz")
    )
    assert built["weights"] == "imagenet"
    assert built["path"].endswith("model.pt2")
    labels = y.argmax(1).tolist()
    assert labels[0] in CAT_CLASSES  # chelsea.png, a tabby cat (282, tiger cat, here)
    assert labels[2:] == [967, 657]  # coffee.png: espresso; rocket.jpg: missile
    _assert_not_degenerate(y)


@pytest.mark.slow
def test_torch_mobilenetv2_random_is_not_degenerate(pool: WorkerPool, tmp_path: Path) -> None:
    variant = zoo_model("mobilenetv2").variant("torch")
    calibration = _noise(variant, tmp_path / "cal.npz", seed=1)
    built, y = _build_and_run(
        pool,
        tmp_path,
        "mobilenetv2",
        "torch",
        "random",
        _noise(variant, tmp_path / "x.npz", seed=2),
        calibration,
    )
    assert built["weights"] == "random"
    assert built["weights_detail"] == "random (torch.manual_seed(0)), 52 BatchNorm layers"
    assert built["note"].endswith("BatchNorm statistics calibrated on 8 images from cal.npz")
    _assert_not_degenerate(y)


@pytest.mark.slow
def test_keras_mobilenetv2_random_is_not_degenerate(pool: WorkerPool, tmp_path: Path) -> None:
    """weights=None MobileNetV2 gives an exactly uniform softmax; calibrated it does not."""
    variant = zoo_model("mobilenetv2").variant("keras")
    calibration = _noise(variant, tmp_path / "cal.npz", seed=1)
    built, y = _build_and_run(
        pool,
        tmp_path,
        "mobilenetv2",
        "keras",
        "random",
        _noise(variant, tmp_path / "x.npz", seed=2),
        calibration,
    )
    assert built["path"].endswith("model.keras")
    assert built["weights_detail"] == "random (keras.utils.set_random_seed(0)), 52 BatchNorm layers"
    _assert_not_degenerate(y)
    assert np.abs(y - 1 / 1000).max() > 1e-4  # not the uniform softmax
    # `tf` is the same Keras model exported as a SavedModel: same seed, same outputs
    built_tf, y_tf = _build_and_run(
        pool, tmp_path, "mobilenetv2", "tf", "random", tmp_path / "x.npz", calibration
    )
    assert built_tf["path"].endswith("saved_model")
    assert np.abs(y_tf - y).max() < 1e-5


@pytest.mark.slow
def test_missing_keras_weights_name_the_file(tmp_path: Path) -> None:
    env = {"KERAS_HOME": str(tmp_path / "keras-home")}
    with WorkerPool(tmp_path / "logs", timeout=600, extra_env=env) as own:
        outcome = _build(own, "inceptionv3", "keras", "imagenet", tmp_path / "out")
    assert not outcome
    assert outcome.error_type == "ConvdiffError"
    assert outcome.message.startswith(
        "ImageNet weights for inceptionv3 (keras) are not cached and could not be downloaded"
    )
    assert outcome.message.endswith(
        "place inception_v3_weights_tf_dim_ordering_tf_kernels.h5 (from https://storage."
        "googleapis.com/tensorflow/keras-applications/inception_v3/inception_v3_weights_tf_"
        f"dim_ordering_tf_kernels.h5) at {tmp_path}/keras-home/models/inception_v3_weights_tf_"
        "dim_ordering_tf_kernels.h5, or pass --weights PATH to a weights file, "
        "or --weights random"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "detail"),
    [
        (
            "convnext_tiny",
            "random (keras.utils.set_random_seed(0)), 0 BatchNorm layers, "
            "18 layer scales set to 1 (from keras' 1e-6)",
        ),
        ("efficientnetv2_b0", "random (keras.utils.set_random_seed(0)), 59 BatchNorm layers"),
    ],
)
def test_new_keras_models_random_are_not_degenerate(
    pool: WorkerPool, tmp_path: Path, name: str, detail: str
) -> None:
    """ConvNeXtTiny's 1e-6 layer scales are set to 1, EfficientNetV2B0's BatchNorm calibrated:
    the photos get different answers."""
    variant = zoo_model(name).variant("keras")
    calibration = _noise(variant, tmp_path / "cal.npz", seed=1)
    images = _photos(variant, tmp_path / "x.npz")
    built, y = _build_and_run(pool, tmp_path, name, "keras", "random", images, calibration)
    assert built["path"].endswith("model.keras")
    assert built["weights_detail"] == detail
    _assert_not_degenerate(y)
