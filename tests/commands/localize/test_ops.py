"""Ops whose settings TVM's ONNX frontend hides, read by the localizer on tiny models.

- Pad: TVM 0.27 lowers ONNX Pad to a TE kernel (``call_tir``); convdiff imports it as
  ``relax.nn.pad`` so the pad folds into the next Conv as TFLite's PAD does. Without that, real
  MobileNetV2 keras -> tflite showed 4 false ``asymmetric_pads`` + 4 ``missing_layer``.
- Resize: its method, coordinate mode, rounding and size are one ``resize`` finding.
- Depth: canonicalization folds every BatchNorm (it stopped after 50 rounds, which left two of
  MobileNetV2's 52 in a torch -> onnx comparison: 2 ``scale`` + 4 graph findings).
- Nested concats: tf2onnx merges InceptionV3's, TFLite keeps them (was 52 unmatched layers).
- An NHWC input padded first (TFLite ResNet101's PAD): its layout is still read from the conv
  after the pad (was "different inputs", exit 2).
- A Gather at a constant index is one ``take`` (TVM wrapped it in shape arithmetic; torchvision
  InceptionV3 torch -> onnx aligned 7 of 461 layers).
- The same Gather through onnx2torch is ``aten.item`` of a buffer feeding ``select``, which
  TVM's torch frontend refused ("value has to be scalar or Tensor": InceptionV3 onnx -> torch
  exited 2); the buffer's value is folded in first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convdiff.commands.localize.flow import GRAPH_STAGES, LocalizeConfig, LocalizeReport, localize
from convdiff.core.progress import Progress
from convdiff.ir.graph import CanonicalGraph
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import convert
from tests.tiny.real_patterns import (
    tiny_channel_gather,
    tiny_deep_bn,
    tiny_nested_concat,
    tiny_nhwc_pad_first,
    tiny_resize,
    tiny_stride2_pad,
)


def _localize(pool: WorkerPool, source: Path, target: Path, out: Path) -> LocalizeReport:
    config = LocalizeConfig(str(source), str(target), stages=GRAPH_STAGES, out=out)
    return localize(config, Progress(enabled=False), pool)


def _found(report: LocalizeReport) -> list[tuple[str, str, str | None, str | None]]:
    return [(f.stage, f.kind, f.source_layer, f.target_layer) for f in report.findings]


def test_a_pad_node_before_a_stride2_conv_equals_the_conv_s_own_pads(
    pool: WorkerPool, tmp_path: Path
) -> None:
    padded = tiny_stride2_pad(tmp_path / "pad_node.onnx")  # dynamic batch, as tf2onnx writes
    in_conv = tiny_stride2_pad(tmp_path / "pads_in_conv.onnx", in_conv=True)
    report = _localize(pool, padded, in_conv, tmp_path / "out")
    assert _found(report) == [] and report.exit_code == 0
    assert report.alignment["pairs"] == 4 and report.alignment["unmatched"] == 0
    relax_py = (tmp_path / "out" / "ir" / "source" / "relax.py").read_text()
    assert "R.nn.pad(" in relax_py and "call_tir" not in relax_py


def test_a_pad_node_imported_as_relax_pad_still_runs_on_tvm(
    pool: WorkerPool, tmp_path: Path
) -> None:
    x = np.random.default_rng(2).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    outputs = {}
    for name, in_conv in (("pad_node", False), ("pads_in_conv", True)):
        model = tiny_stride2_pad(tmp_path / f"{name}.onnx", in_conv=in_conv)
        ran = client.run_tvm(pool, "onnx", model, tmp_path / "x.npz", tmp_path / f"{name}.npz")
        assert ran, ran.message
        with np.load(tmp_path / f"{name}.npz") as data:
            outputs[name] = data["y"]
    assert outputs["pad_node"].shape == (2, 5)
    np.testing.assert_allclose(outputs["pad_node"], outputs["pads_in_conv"], rtol=0, atol=1e-5)


def test_a_changed_resize_coordinate_mode_is_one_resize_finding(
    pool: WorkerPool, tmp_path: Path
) -> None:
    source = tiny_resize(tmp_path / "half_pixel.onnx", "half_pixel")
    target = tiny_resize(tmp_path / "align_corners.onnx", "align_corners")
    report = _localize(pool, source, target, tmp_path / "out")
    assert _found(report) == [("hyperparams", "resize", "upsample", "upsample")]
    finding = report.findings[0]
    assert finding.evidence == {
        "op": "resize",
        "attrs": ["coordinate_mode"],
        "source": {"coordinate_mode": "half_pixel"},
        "target": {"coordinate_mode": "align_corners"},
    }
    assert "coordinate_mode=half_pixel" in finding.suggestion


@pytest.mark.parametrize(
    ("source", "target", "attrs"),
    [
        (("half_pixel", "linear"), ("pytorch_half_pixel", "linear"), []),  # equal for 2x
        (("half_pixel", "linear"), ("half_pixel", "nearest"), ["method", "rounding"]),
        (("asymmetric", "nearest"), ("half_pixel", "nearest"), ["coordinate_mode"]),
    ],
)
def test_resize_settings_are_compared_after_normalization(
    pool: WorkerPool,
    tmp_path: Path,
    source: tuple[str, str],
    target: tuple[str, str],
    attrs: list[str],
) -> None:
    a = tiny_resize(tmp_path / "a.onnx", *source)
    b = tiny_resize(tmp_path / "b.onnx", *target)
    report = _localize(pool, a, b, tmp_path / "out")
    assert [f.evidence["attrs"] for f in report.findings] == ([attrs] if attrs else [])
    assert all(f.kind == "resize" for f in report.findings)


def test_every_batch_norm_of_a_deep_model_is_folded(pool: WorkerPool, tmp_path: Path) -> None:
    with_bn = tiny_deep_bn(tmp_path / "bn.onnx")
    folded = tiny_deep_bn(tmp_path / "folded.onnx", folded=True)
    report = _localize(pool, with_bn, folded, tmp_path / "out")
    assert _found(report) == [] and report.exit_code == 0
    assert report.alignment["pairs"] == 1 + 60 * 2 + 2 and report.alignment["unmatched"] == 0


def test_a_nested_concat_equals_the_merged_one(pool: WorkerPool, tmp_path: Path) -> None:
    nested = tiny_nested_concat(tmp_path / "nested.onnx")
    merged = tiny_nested_concat(tmp_path / "merged.onnx", nested=False)
    for source, target in ((nested, merged), (merged, nested)):
        report = _localize(pool, source, target, tmp_path / f"out-{source.stem}")
        assert _found(report) == [] and report.exit_code == 0
        assert report.alignment["pairs"] == 8 and report.alignment["unmatched"] == 0


def test_an_nhwc_input_padded_first_keeps_its_layout(pool: WorkerPool, tmp_path: Path) -> None:
    pad_first = tiny_nhwc_pad_first(tmp_path / "pad_first.onnx")
    transpose_first = tiny_nhwc_pad_first(tmp_path / "transpose_first.onnx", pad_first=False)
    report = _localize(pool, transpose_first, pad_first, tmp_path / "out")
    assert _found(report) == [] and report.exit_code == 0
    assert report.alignment["unmatched"] == 0


def test_a_gather_at_a_constant_index_is_one_take(pool: WorkerPool, tmp_path: Path) -> None:
    # the .pt2 import of torchvision's InceptionV3 has take(x, 0); TVM's ONNX Gather converter
    # wrapped the index in shape_of/less/where arithmetic and nothing aligned after it
    model = tiny_channel_gather(tmp_path / "gather.onnx")
    imported = client.import_graph(pool, "onnx", model, tmp_path / "ir")
    assert imported, imported.message
    graph = CanonicalGraph.load(Path(imported.value["graph"]))
    others = [layer.attrs["tvm_op"] for layer in graph.layers if layer.op == "other"]
    assert others == ["relax.take"] * 3
    assert "shape_of" not in (tmp_path / "ir" / "relax.py").read_text()


def test_onnx2torch_s_constant_gather_imports_into_tvm(pool: WorkerPool, tmp_path: Path) -> None:
    model = tiny_channel_gather(tmp_path / "gather.onnx")
    pt2 = convert(pool, "onnx", "torch", model, tmp_path / "pt2", worker="torch")
    report = _localize(pool, model, Path(pt2), tmp_path / "out")
    assert report.error == "" and _found(report) == [] and report.exit_code == 0
    assert report.alignment["unmatched"] == 0
    assert report.imports["target"]["notes"] == [
        "3 aten.item of a constant buffer folded to its value for TVM"
    ]
