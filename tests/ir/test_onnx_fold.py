"""Run-time Pad widths evaluated with onnxruntime (convdiff.ir.onnx_fold), on a tiny model whose
Pad takes the widths a legacy torch export of TF "SAME" padding computes: one row and one column
at the bottom/right. onnxslim 0.1.98 folds them to the top/left; the fold here keeps them."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxslim
from onnx import numpy_helper

from convdiff.ir import onnx_fold
from tests.tiny.onnx_models import runtime_pads_cnn

BOTTOM_RIGHT = [0, 0, 0, 0, 0, 0, 1, 1]  # N, C, H, W before; N, C, H, W after


def _pads(model: onnx.ModelProto) -> list[int]:
    (pad,) = [n for n in model.graph.node if n.op_type == "Pad"]
    (init,) = [i for i in model.graph.initializer if i.name == pad.input[1]]
    return numpy_helper.to_array(init).tolist()


def test_run_time_pads_become_their_values_and_their_computation_goes(tmp_path: Path) -> None:
    model = onnx.load(runtime_pads_cnn(tmp_path / "m.onnx"))
    assert len(model.graph.node) == 36
    folded, pads = onnx_fold.fold_runtime_pads(model)
    assert pads == {"pad": BOTTOM_RIGHT}
    assert _pads(folded) == BOTTOM_RIGHT
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Pad", "MaxPool", "Flatten", "Gemm"]
    assert sorted(i.name for i in folded.graph.initializer) == [
        "conv_b", "conv_w", "fc_b", "fc_w", "pads",
    ]  # fmt: skip
    assert onnx_fold.max_difference(model, folded) == 0.0
    onnx.checker.check_model(folded)


def test_onnxslim_folds_the_pads_to_the_top_left_and_the_check_sees_it(tmp_path: Path) -> None:
    """The cause of open_nsfw's false graph finding: onnxslim's symbolic shape inference passes
    Reshape(-1, 2)'s data through flat, so the Slice that reverses its rows reverses the list."""
    model = onnx.load(runtime_pads_cnn(tmp_path / "m.onnx"))
    slimmed = onnxslim.slim(model)
    assert _pads(slimmed) == [0, 0, 1, 1, 0, 0, 0, 0]
    assert onnx_fold.max_difference(model, slimmed) > 100 * onnx_fold.TOLERANCE


def test_pads_that_follow_a_symbolic_dimension_are_not_folded(tmp_path: Path) -> None:
    model = onnx.load(runtime_pads_cnn(tmp_path / "m.onnx", size="hw"))
    folded, pads = onnx_fold.fold_runtime_pads(model)
    assert pads == {} and folded is model
