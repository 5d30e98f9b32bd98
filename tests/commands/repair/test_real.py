"""`convdiff run --repair` on the published study's case (slow): InceptionV3 Keras -> TFLite
with dynamic-range optimization, seeded BatchNorm-calibrated random weights.

The converter stores 94 weight tensors as int8; LiteRT's hybrid kernels then flip labels. The
repair must put the source's float weights back into exactly those tensors, bring the top-1
discrepancy on the sample set to 0% and the outputs to a float conversion's level, in a handful
of inference passes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convdiff.commands.followup import run
from convdiff.commands.run.types import RunConfig
from convdiff.core.options import ConvertOptions
from convdiff.core.progress import Progress
from convdiff.ir import tflite_quant

pytestmark = pytest.mark.slow


def test_inceptionv3_dynamic_range_is_repaired_to_float_level(tmp_path: Path) -> None:
    config = RunConfig(
        model="inceptionv3",
        src="keras",
        dst="tflite",
        convert=ConvertOptions(tflite_opt="dynamic-range"),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        repair=True,
    )
    report = run(config, Progress(enabled=False))
    assert report.status == "discrepancy" and report.top1_discrepancy > 0  # the conversion's
    repaired = report.repair
    assert repaired.status == "repaired"
    assert repaired.after["top1_discrepancy"] == 0.0
    assert repaired.after["max_abs_diff"] < 1e-5  # the float conversion: 2e-7
    assert repaired.passes == {"native": 3, "tvm": 3}  # localize: 2 models + the segments
    target = report.chain[-1].artifact.path
    int8 = {t.name for t in tflite_quant.read(target).quantized}
    patch = json.loads(Path(repaired.patch).read_text())
    assert {(e["action"], e["field"], e["stage"]) for e in patch["edits"]} == {
        ("set_tensor", "weight", "weights")
    }
    assert len(patch["edits"]) == len(int8) == 94
    fixed = Path(repaired.output)
    assert tflite_quant.read(fixed).quantized == []  # no int8 weight left
    assert fixed.stat().st_size > 3 * Path(target).stat().st_size  # float32, not int8
