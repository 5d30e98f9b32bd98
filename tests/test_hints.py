"""Known crashes get their known cause; the messages are the ones the tools really printed."""

from __future__ import annotations

import pytest

from convdiff.commands.run.types import Crash
from convdiff.hints import hint_for

SEEN = {
    "onnx2torch": "Converter is not implemented (OperationDescription(domain='', "
    "operation_type='ReduceMean', version=18))",
    "TFLiteConverter": "Could not translate MLIR to FlatBuffer: 'tf.Mean' op is neither a custom "
    "op nor a flex op; failed while converting: 'main': [tf.Mean(tensor<?x1280x7x7xf32>, "
    "tensor<2xi64>) -> (tensor<?x1280x1x1xf32>)]",
    "onnx2keras": "Layer StatefulPartitionedCall_resnet101_1_predictions_1_MatMul:0 weight shape "
    "(1, 1000) is not compatible with provided weight shape (2048, 1000).",
}


@pytest.mark.parametrize(
    ("tool", "start"),
    [
        ("onnx2torch", "the ONNX file uses an opset-18+ version"),
        ("TFLiteConverter", "the Keras model reduces over int64 axes"),
        ("onnx2keras", "onnx2keras misreads the MatMul weights of tf2onnx graphs"),
    ],
)
def test_seen_crashes_get_their_hint(tool: str, start: str) -> None:
    hint = hint_for(Crash("convert", tool, "v", SEEN[tool]))
    assert hint is not None and hint.startswith(start)


def test_unknown_crash_or_other_tool_gets_none() -> None:
    assert hint_for(Crash("convert", "onnx2torch", "v", "Segmentation fault")) is None
    assert hint_for(Crash("convert", "onnx2keras", "v", SEEN["onnx2torch"])) is None
    opset13 = SEEN["onnx2torch"].replace("version=18", "version=13")
    assert hint_for(Crash("convert", "onnx2torch", "v", opset13)) is None
