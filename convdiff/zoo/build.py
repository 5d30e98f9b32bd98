"""Child-side entry of the zoo: build one catalog model in one framework and save it.

Runs in a worker of kind ``tf`` (keras, tf) or ``torch`` (torch); the builders import their
framework inside the function. The orchestrator calls::

    pool.call(variant.worker, "convdiff.zoo.build:build", model=..., framework=..., ...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.core.trust import record_written
from convdiff.zoo import weights_plan, zoo_model


def build(
    model: str,
    framework: str,
    weights: str = "auto",
    seed: int = 0,
    calibration: str | None = None,
    out_dir: str = ".",
) -> dict[str, Any]:
    """Build ``model`` for ``framework`` with the weight policy ``weights``; save it in ``out_dir``.

    Returns ``{"path", "weights": "imagenet"|"random"|"file", "weights_detail", "note"}``.
    ``calibration`` is an .npz whose ``x`` holds NHWC images preprocessed for this model; it
    calibrates BatchNorm statistics of random weights (seeded noise is used without it).
    """
    variant = zoo_model(model).variant(framework)
    plan = weights_plan(model, framework, weights)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if variant.framework == "torch":
        from convdiff.zoo.torch_models import build_torch as build_model
    else:
        from convdiff.zoo.keras_models import build_keras as build_model
    built = build_model(variant, plan, seed, calibration, folder)
    record_written(built["path"])  # convdiff's own output (core.trust)
    return built
