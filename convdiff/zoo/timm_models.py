"""Child side (worker kind ``torch``): ``timm:<name>`` models, built by timm itself.

Random weights are timm's own seeded init with two of its inits undone, because each hides a
whole branch from any comparison (a fault inside it does not move the outputs):

- ResNet, RegNet and other residual nets zero the weight of the last norm of each block
  (``zero_init_last=True``): the block starts as the identity. Such a norm weight (all zeros)
  is set to ones, which is what ``zero_init_last=False`` builds.
- ConvNeXt (and CaiT, DeiT-3, ... ``init_values``) scale each branch by a layer scale of 1e-6
  or 1e-5. A layer scale (a ``gamma`` parameter, all values equal and below 1e-3) is set to
  ones, which is what ``ls_init_value=1.0`` builds.

This is done after the build, on every architecture alike, rather than by passing those
arguments: half of timm's model classes refuse an argument they do not know. A worker test
checks that the result equals ``timm.create_model(..., zero_init_last=False)`` and
``(..., ls_init_value=1.0)`` exactly.
"""

from __future__ import annotations

from typing import Any

from convdiff.core.errors import ConvdiffError
from convdiff.zoo import ZooVariant
from convdiff.zoo.timm_catalog import PREFIX

LAYER_SCALE_BELOW = 1e-3


def arch(variant: ZooVariant) -> str:
    return variant.model.removeprefix(PREFIX)


def architecture(variant: ZooVariant) -> Any:
    """The architecture with timm's seeded init (the caller seeds torch)."""
    import timm

    return timm.create_model(arch(variant), pretrained=False)


def imagenet(variant: ZooVariant) -> Any:
    """timm's own pretrained loading (Hugging Face hub cache, else download); a failure while
    the weights are not cached names the file and the ways around it."""
    import timm

    at_hand = variant.imagenet_at_hand()
    try:
        if not at_hand:
            _reachable(variant.weights_origin)
        return timm.create_model(arch(variant), pretrained=True)
    except Exception as exc:
        if at_hand:
            raise
        raise ConvdiffError(
            f"ImageNet weights for {variant.model} are not cached and could not be "
            f"downloaded ({type(exc).__name__})",
            variant.missing_weights_fix(),
        ) from exc


def _reachable(url: str) -> None:
    """Fail at once when the weights' host has no address: huggingface_hub would otherwise
    retry each file it tries for about 45 s before giving up."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(url).hostname
    if host:
        socket.getaddrinfo(host, 443)


def loosen_inits(module: Any) -> tuple[int, int]:
    """Undo zero-initialized norm weights and tiny layer scales (see the module's docstring);
    returns how many of each were set to ones."""
    import torch
    from torch import nn

    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    zeroed = scales = 0
    with torch.no_grad():
        for sub in module.modules():
            weight = getattr(sub, "weight", None)
            is_norm = isinstance(sub, norms) and isinstance(weight, torch.Tensor)
            if is_norm and weight.numel() and not weight.any():
                weight.fill_(1.0)
                zeroed += 1
            for name, param in sub.named_parameters(recurse=False):
                if name != "gamma" or not param.numel():
                    continue
                first = param.flatten()[0]
                if 0 < abs(float(first)) < LAYER_SCALE_BELOW and bool((param == first).all()):
                    param.fill_(1.0)
                    scales += 1
    return zeroed, scales
