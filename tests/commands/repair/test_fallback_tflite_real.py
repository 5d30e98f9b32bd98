"""`convdiff run --tflite-opt int8 --repair` on MobileNetV2 (slow): Keras -> full-integer TFLite
calibrated on the sample photos, seeded BatchNorm-calibrated random weights.

The localization must give exactly one precision finding per layer computing in int8 (65:
35 convs, 17 depthwise convs, 10 adds, the mean, the dense layer, the softmax) and no weights,
hyperparams or graph fault; the float fallback must rank the softmax first (with random weights
its 1000 outputs all lie near 0.001, below TFLite's fixed softmax step of 1/256) and end better
than the conversion. Measured here: top-1 81.25% -> 25% with the softmax alone in float, 0%
with 63 of the 65 layers (random weights make every label fragile), 14 inference passes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from convdiff.commands.followup import run
from convdiff.commands.run.types import RunConfig
from convdiff.core.options import ConvertOptions
from convdiff.core.progress import Progress
from convdiff.ir import tflite_quant

pytestmark = pytest.mark.slow


def test_mobilenetv2_int8_is_localized_per_layer_and_fallen_back(tmp_path: Path) -> None:
    config = RunConfig(
        model="mobilenetv2",
        src="keras",
        dst="tflite",
        convert=ConvertOptions(tflite_opt="int8"),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        repair=True,
    )
    report = run(config, Progress(enabled=False))
    assert report.status == "discrepancy" and report.top1_discrepancy > 0
    target = report.chain[-1].artifact.path
    layers = tflite_quant.quantized_ops(target)
    assert Counter(op.kind for op in layers) == {
        "CONV_2D": 35,
        "DEPTHWISE_CONV_2D": 17,
        "ADD": 10,
        "MEAN": 1,
        "FULLY_CONNECTED": 1,
        "SOFTMAX": 1,
    }
    folder = Path(report.repair.patch).parent
    localized = json.loads((folder / "localize" / "report.json").read_text())
    faults = [f for f in localized["findings"] if f["stage"] in ("weights", "hyperparams", "graph")]
    assert {(f["stage"], f["kind"]) for f in faults} == {("weights", "precision")}
    assert sorted(f["target_layer"] for f in faults) == sorted(op.name for op in layers)
    fallback = json.loads((folder / "repair.json").read_text())["fallback"]
    assert fallback["quantized_layers"] == 65
    assert fallback["layers"][0] == layers[-1].name  # the softmax
    first = fallback["trials"][0]
    assert first["layers"] == 1 and first["top1_discrepancy"] < fallback["top1_before"]
    assert fallback["top1_after"] < fallback["top1_before"]
    assert 0 < fallback["float_layers"] <= 65
    assert fallback["size_after"] > fallback["size_before"]  # float weights for int8 ones
