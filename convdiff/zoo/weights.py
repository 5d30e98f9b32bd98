"""Weight policies: where pretrained files live, and how random weights are made meaningful.

Light part (orchestrator side, no framework import): the cache paths keras.applications and
torchvision read, computed the way those libraries compute them, so a run can say before it
starts whether ImageNet weights are at hand. There is no internet here, and a missing file
must be named exactly (file name and folder) in the error.

Child part (imports inside functions): seeding and BatchNorm calibration. A randomly
initialized classifier with untouched BatchNorm statistics (mean 0, variance 1) often gives
the same output for every image -- ``weights=None`` Keras MobileNetV2 gives an exactly uniform
softmax -- so every conversion would "agree". One forward pass in training mode over real
(preprocessed) images with the running statistics reset makes each BatchNorm normalize its
actual input, and the outputs then depend on the image.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.inputs.preprocess import PreprocessSpec, apply

POLICIES = ("auto", "imagenet", "random")
CALIBRATION_NOISE_IMAGES = 16  # used only when no calibration images are given
CALIBRATION_MAX_IMAGES = 32  # Keras calibrates in one batch: bound its memory


def keras_cache_dir() -> Path:
    """``keras_home()/models`` as keras computes it: $KERAS_HOME, ~/.keras or /tmp/.keras."""
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"])
    else:
        home = Path(os.path.expanduser("~"))
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    return base / "models"


def torch_cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: $TORCH_HOME, $XDG_CACHE_HOME/torch, ~/.cache/torch."""
    if "TORCH_HOME" in os.environ:
        base = Path(os.path.expanduser(os.environ["TORCH_HOME"]))
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
        base = Path(xdg) / "torch"
    return base / "hub" / "checkpoints"


def shipped_file(package: str, relative: str) -> Path | None:
    """A weights file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


# -- child side ----------------------------------------------------------------------------


def calibration_images(
    calibration: str | None, spec: PreprocessSpec, seed: int
) -> tuple[np.ndarray, str]:
    """NHWC float32 images for BatchNorm calibration, and a note on where they came from.

    The given .npz (``x``: NHWC images preprocessed for this model) is used as is, up to its
    first ``CALIBRATION_MAX_IMAGES`` images. Without one, seeded uniform-noise pixels go
    through the model's own preprocessing, so at least the value range and channel order are
    the model's.
    """
    if calibration:
        with np.load(calibration) as data:
            x = data["x"][:CALIBRATION_MAX_IMAGES].astype(np.float32)
        name = Path(calibration).name
        return x, f"BatchNorm statistics calibrated on {len(x)} images from {name}"
    rng = np.random.default_rng(seed)
    h, w = spec.size
    pixels = rng.integers(0, 256, size=(CALIBRATION_NOISE_IMAGES, h, w, 3), dtype=np.uint8)
    x = np.stack([apply(spec, image) for image in pixels])
    return x, (
        f"BatchNorm statistics calibrated on {CALIBRATION_NOISE_IMAGES} seeded noise images "
        "(no calibration images given)"
    )


def calibrate_torch(module: Any, x_nchw: np.ndarray, chunk: int = 16) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them in one pass.

    ``momentum=None`` makes torch keep a cumulative average over the chunks, so the result is
    the statistics of the whole calibration set, not of its last chunk. Only the BatchNorm
    layers are put in training mode: EfficientNet's drop-connect or a dropout in training mode
    would make the statistics random. Returns the number of BatchNorm layers calibrated.
    """
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    layers = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    saved = [m.momentum for m in layers]
    module.eval()  # dropout, drop-connect and auxiliary heads stay as at inference
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    with torch.no_grad():
        for start in range(0, len(x_nchw), chunk):
            module(torch.from_numpy(np.ascontiguousarray(x_nchw[start : start + chunk])))
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum
    module.eval()
    return len(layers)


def calibrate_keras(model: Any, x_nhwc: np.ndarray) -> int:
    """Set each BatchNormalization's moving statistics to those of ``x`` in one pass.

    With ``momentum = 0`` Keras' update ``moving = moving * momentum + batch * (1 - momentum)``
    stores the batch statistics; a single call with ``training=True`` over the whole set then
    gives every layer the statistics of its input as normalized by the layers before it --
    what it will see at inference. The layers' momentum is restored afterwards.
    """
    import keras

    layers = [
        layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x_nhwc, training=True)
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum
    return len(layers)


def all_layers(model: Any) -> list[Any]:
    """Layers of a model, nested models flattened."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(all_layers(layer))
    return found
