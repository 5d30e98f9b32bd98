"""Child side (worker kind ``torch``): torchvision, EfficientNet-Lite0 and timm models, as .pt2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.core.errors import ConvdiffError
from convdiff.zoo import WeightsPlan, ZooVariant, timm_models
from convdiff.zoo.timm_catalog import is_timm_name
from convdiff.zoo.weights import calibrate_torch, calibration_images

LITE0_NAME = "efficientnet-lite0"


def build_torch(
    variant: ZooVariant, plan: WeightsPlan, seed: int, calibration: str | None, out_dir: Path
) -> dict[str, Any]:
    """Build the module, apply the weight policy, save with :func:`frameworks.torch.save`."""
    import torch

    from convdiff.frameworks import torch as torch_fw

    torch.manual_seed(seed)
    note = ""
    if plan.policy == "imagenet":
        module = _imagenet(variant)
        detail = f"ImageNet weights ({variant.weights_path()})"
    else:
        module = _architecture(variant)
        if plan.policy == "file":
            _load_file(module, plan.path, variant)
            detail = f"weights file {plan.path}"
        else:
            loosened = ""
            if is_timm_name(variant.model):
                zeroed, scales = timm_models.loosen_inits(module)
                loosened = (
                    f"; timm inits undone: {zeroed} zero-initialized norm weights and "
                    f"{scales} layer scales set to 1"
                )
            x, source = calibration_images(calibration, variant.preprocess, seed)
            count = calibrate_torch(module, x.transpose(0, 3, 1, 2))
            detail = f"random (torch.manual_seed({seed})), {count} BatchNorm layers{loosened}"
            note = f"{plan.note}; {source}"
    module.eval()
    saved = torch_fw.save(module, str(out_dir / "model.pt2"), variant.input_shape)
    if saved["fallback_reason"]:
        note = "; ".join(
            filter(None, [note, f"saved as {saved['format']}: {saved['fallback_reason']}"])
        )
    return {"path": saved["path"], "weights": plan.policy, "weights_detail": detail, "note": note}


def _architecture(variant: ZooVariant) -> Any:
    """The architecture with freshly initialized (seeded) weights."""
    if is_timm_name(variant.model):
        return timm_models.architecture(variant)
    if variant.model == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(LITE0_NAME, num_classes=variant.num_classes)
    import torchvision

    builder = getattr(torchvision.models, variant.builder.rsplit(".", 1)[1])
    if variant.model == "inceptionv3":
        # transform_input=True is what torchvision sets with its ImageNet weights: the model
        # takes ImageNet-normalized input and re-normalizes it to the [-1, 1] the weights
        # were trained on. Keeping it for every policy keeps one architecture per name.
        return builder(weights=None, transform_input=True, init_weights=True)
    return builder(weights=None)


def _imagenet(variant: ZooVariant) -> Any:
    """The libraries' own loading code; a failed download names the file to place."""
    if is_timm_name(variant.model):
        return timm_models.imagenet(variant)
    if variant.model == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        path = variant.weights_path()
        if not path.is_file():
            raise ConvdiffError(f"{path} is missing", variant.missing_weights_fix())
        return EfficientNet.from_pretrained(LITE0_NAME, weights_path=str(path))
    import torchvision

    builder = getattr(torchvision.models, variant.builder.rsplit(".", 1)[1])
    at_hand = variant.imagenet_at_hand()
    try:
        return builder(weights=torchvision.models.get_weight(variant.weights_enum), progress=False)
    except Exception as exc:
        if at_hand:
            raise
        raise ConvdiffError(
            f"ImageNet weights for {variant.model} (torch) are not cached and could not be "
            f"downloaded ({type(exc).__name__})",
            variant.missing_weights_fix(),
        ) from exc


def _load_file(module: Any, path: Path | None, variant: ZooVariant) -> None:
    """A state_dict file (possibly wrapped as {"state_dict": ...} or {"model": ...}), read
    safely: ``torch.load(weights_only=True)``, or safetensors for a .safetensors file (timm's
    hub format)."""
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    try:
        module.load_state_dict(state)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise ConvdiffError(
            f"weights file {path} does not fit torch {variant.model}: {first}",
            "give a state_dict (.pth, .safetensors) saved from this architecture",
        ) from exc
