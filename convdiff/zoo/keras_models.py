"""Child side (worker kind ``tf``): keras.applications models, saved as .keras or SavedModel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.core.errors import ConvdiffError
from convdiff.zoo import WeightsPlan, ZooVariant
from convdiff.zoo.weights import all_layers, calibrate_keras, calibration_images

APPLICATIONS = {
    "mobilenetv2": "MobileNetV2",
    "resnet101": "ResNet101",
    "inceptionv3": "InceptionV3",
    "convnext_tiny": "ConvNeXtTiny",
    "efficientnetv2_b0": "EfficientNetV2B0",
}
LAYER_SCALE_BELOW = 1e-3


def build_keras(
    variant: ZooVariant, plan: WeightsPlan, seed: int, calibration: str | None, out_dir: Path
) -> dict[str, Any]:
    """Build with keras.applications, apply the weight policy, save (keras: .keras, tf: export)."""
    import keras

    keras.utils.set_random_seed(seed)
    app = getattr(keras.applications, APPLICATIONS[variant.model])
    h, w = variant.preprocess.size
    shape = (h, w, 3)
    if plan.policy == "imagenet":
        model = _imagenet(app, variant, shape)
        detail = f"keras.applications ImageNet weights ({variant.weights_path()})"
        note = ""
    else:
        model = app(weights=None, input_shape=shape, classes=variant.num_classes)
        if plan.policy == "file":
            _load_file(model, plan.path, variant)
            detail = f"weights file {plan.path}"
            note = ""
        else:
            scales = loosen_layer_scales(model)
            x, source = calibration_images(calibration, variant.preprocess, seed)
            count = calibrate_keras(model, x)
            detail = f"random (keras.utils.set_random_seed({seed})), {count} BatchNorm layers"
            if scales:
                detail += f", {scales} layer scales set to 1 (from keras' 1e-6)"
            note = f"{plan.note}; {source}"
    if variant.framework == "tf":
        path = out_dir / "saved_model"
        model.export(str(path))
    else:
        path = out_dir / "model.keras"
        model.save(str(path))
    return {"path": str(path), "weights": plan.policy, "weights_detail": detail, "note": note}


def loosen_layer_scales(model: Any) -> int:
    """Set ConvNeXt's layer scales (``gamma``, initialized to 1e-6: each block would barely
    move the output, so a fault inside it would not show) to ones; returns how many."""
    import numpy as np

    count = 0
    for layer in all_layers(model):
        gamma = getattr(layer, "gamma", None)
        if gamma is None or not hasattr(gamma, "assign") or type(layer).__name__ != "LayerScale":
            continue
        values = np.asarray(gamma.numpy())
        if (
            values.size
            and 0 < abs(values.flat[0]) < LAYER_SCALE_BELOW
            and (values == values.flat[0]).all()
        ):
            gamma.assign(np.ones_like(values))
            count += 1
    return count


def _imagenet(app: Any, variant: ZooVariant, shape: tuple[int, int, int]) -> Any:
    """keras.applications' own loading (cache, else download); a failed download names the file."""
    at_hand = variant.imagenet_at_hand()
    try:
        return app(weights="imagenet", input_shape=shape, classes=variant.num_classes)
    except Exception as exc:
        if at_hand:
            raise
        raise ConvdiffError(
            f"ImageNet weights for {variant.model} ({variant.framework}) are not cached and "
            f"could not be downloaded ({type(exc).__name__})",
            variant.missing_weights_fix(),
        ) from exc


def _load_file(model: Any, path: Path | None, variant: ZooVariant) -> None:
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise ConvdiffError(
            f"weights file {path} does not fit keras {variant.model}: {_first_line(exc)}",
            "give a .h5 or .weights.h5 file saved from this keras.applications architecture",
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
