"""Column groups per converter tool (``convdiff table --converters``): planned cells and views."""

from __future__ import annotations

import pytest

from convdiff.commands.table.flow import _cells, plan
from convdiff.commands.table.render import to_csv, to_markdown
from convdiff.commands.table.types import Cell, TableConfig, TableReport
from convdiff.core.errors import ConvdiffError

CONFIG = TableConfig(
    models=("mobilenetv2",), frameworks=("keras", "tf", "tflite"), converters=("onnx2keras",)
)


def test_a_tool_group_holds_the_cells_whose_route_it_can_serve() -> None:
    cells = _cells(CONFIG, plan(CONFIG))
    grouped = [(c.src, c.dst, c.route, c.run_dir) for c in cells if c.converter]
    # keras -> tf/tflite would pass Keras twice through onnx2keras: no cell; from tf, every
    # target can go through ONNX and onnx2keras
    assert grouped == [
        ("tf", "keras", ("tf", "onnx", "keras"), "cells/mobilenetv2/tf-keras-onnx2keras"),
        (
            "tf",
            "tflite",
            ("tf", "onnx", "keras", "tflite"),
            "cells/mobilenetv2/tf-tflite-onnx2keras",
        ),
    ]
    assert len([c for c in cells if not c.converter]) == 4  # 2 sources x 3 targets, no diagonal
    assert len({c.key for c in cells}) == len(cells)


def test_groups_are_columns_of_their_own_in_every_view() -> None:
    blocks = plan(CONFIG)
    cells = [
        Cell(c.model, c.src, c.dst, "ok", c.route, 16, 0.0, 0.0, 1e-7, converter=c.converter)
        for c in _cells(CONFIG, blocks)
    ]
    report = TableReport(["keras", "tf", "tflite"], blocks, cells, status="complete")
    header = next(line for line in to_markdown(report).splitlines() if line.startswith("| src"))
    assert (
        header == "| src \\ dst | keras | tf | tflite | keras (onnx2keras) | tflite (onnx2keras) |"
    )
    rows = to_csv(report).splitlines()
    assert rows[0].split(",")[:5] == ["model", "src", "dst", "converter", "status"]
    assert rows[-1].split(",")[:5] == ["mobilenetv2", "tf", "tflite", "onnx2keras", "ok"]


def test_an_unknown_tool_is_refused_before_anything_runs() -> None:
    config = TableConfig(models=("mobilenetv2",), frameworks=("keras",), converters=("onx2tf",))
    with pytest.raises(ConvdiffError) as caught:
        plan(config)
    assert caught.value.problem == "unknown converter 'onx2tf' in --converters"
