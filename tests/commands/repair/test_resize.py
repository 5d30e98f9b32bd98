"""Repairing a resize's sampling (DESIGN.md's "Resize coordinate mode" fault class).

ONNX: the localization tests' tiny Resize models (tests/tiny/real_patterns.py) with the
coordinate mode or the method changed; the repaired file is the source again. TFLite: a Keras
UpSampling2D converted by the TFLiteConverter, its RESIZE_BILINEAR options flipped to
align_corners in the flatbuffer; the repaired file has the converter's own options again.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from convdiff.commands.localize.flow import LocalizeConfig
from convdiff.commands.repair.flow import RepairConfig, RepairReport, repair
from convdiff.core.progress import Progress
from convdiff.ir import tflite_quant
from convdiff.runtime.pool import WorkerPool
from tests.helpers import convert
from tests.tiny.real_patterns import tiny_resize


def _repair(pool: WorkerPool, source: Path, target: Path, fixed: Path, work: Path) -> RepairReport:
    config = RepairConfig(
        LocalizeConfig(str(source), str(target), preprocess="imagenet", input_size=(8, 8)),
        fixed,
        work,
    )
    return repair(config, Progress(enabled=False), pool)


def _resize_attrs(path: Path) -> dict[str, object]:
    (node,) = [n for n in onnx.load(path).graph.node if n.op_type == "Resize"]
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize(
    ("target", "edits", "before"),
    [
        (("align_corners", "linear"), {"upsample.coordinate_mode": "half_pixel"}, 1e-3),
        # a 2x half_pixel resize keeps the sum, which the model's global pool reads: nearest
        # and linear differ in float rounding only, and the file is repaired all the same
        (("half_pixel", "nearest"), {"upsample.resize_method": "linear"}, 1e-6),
    ],
)
def test_an_onnx_resize_is_repaired_to_the_source_s_sampling(
    pool: WorkerPool,
    tmp_path: Path,
    target: tuple[str, str],
    edits: dict[str, str],
    before: float,
) -> None:
    source = tiny_resize(tmp_path / "source.onnx", "half_pixel", "linear")
    faulty = tiny_resize(tmp_path / "faulty.onnx", *target)
    fixed = tmp_path / "fixed.onnx"
    report = _repair(pool, source, faulty, fixed, tmp_path / "work")
    assert report.status == "repaired" and report.exit_code == 0
    assert report.verify["before"]["max_abs_diff"] > before
    assert report.verify["after"]["max_abs_diff"] <= 1e-6
    kept = {f"{e['layer']}.{e['field']}": e["value"] for e in report.verify["kept"]}
    assert kept == edits
    assert _resize_attrs(fixed) == _resize_attrs(source)


def test_a_tflite_resize_is_repaired_to_the_converter_s_options(
    pool: WorkerPool, tmp_path: Path
) -> None:
    built = pool.call(
        "tf", "tests.tiny.keras_models:build_tiny_upsample", out_dir=str(tmp_path / "keras")
    )
    assert built, built.message
    clean = Path(
        convert(pool, "keras", "tflite", built.value, tmp_path / "tflite", tflite_opt="none")
    )
    model = tflite_quant.unpack(clean)
    (resize,) = tflite_quant.ops_of(model, "RESIZE_BILINEAR")
    options = resize.builtinOptions
    assert (options.alignCorners, options.halfPixelCenters) == (False, True)  # Keras' sampling
    options.alignCorners, options.halfPixelCenters = True, False
    faulty = tmp_path / "faulty.tflite"
    faulty.write_bytes(tflite_quant.pack(model))

    fixed = tmp_path / "fixed.tflite"
    report = _repair(pool, Path(built.value), faulty, fixed, tmp_path / "work")
    assert report.status == "repaired" and report.exit_code == 0
    assert report.verify["before"]["max_abs_diff"] > 1e-3
    assert report.verify["after"]["max_abs_diff"] <= 1e-6
    kept = [(e["field"], e["value"]) for e in report.verify["kept"]]
    assert kept == [("coordinate_mode", "half_pixel")]
    (repaired,) = tflite_quant.ops_of(tflite_quant.unpack(fixed), "RESIZE_BILINEAR")
    assert (repaired.builtinOptions.alignCorners, repaired.builtinOptions.halfPixelCenters) == (
        False,
        True,
    )
