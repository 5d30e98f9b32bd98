"""The child side of a worker, without starting one: a tool's message is cut to one line."""

from __future__ import annotations

from convdiff.runtime.child import _one_line


def test_mlir_diagnostic_is_cut_to_its_reason() -> None:
    message = (
        'Could not translate MLIR to FlatBuffer.<unknown>:0: error: loc(callsite(fused["Mean:", '
        '"f/Mean@__inference_5226"] at fused["StatefulPartitionedCall:", "S_1"])): '
        "'tf.Mean' op is neither a custom op nor a flex op\n"
        "<unknown>:0: note: loc(fused[...]): called from\n"
        "TF Select ops: Mean\n"
        "\ttf.Mean(tensor<?x1280x7x7xf32>, tensor<2xi64>) -> (tensor<?x1280x1x1xf32>) : "
        '{device = "", keep_dims = true}\n'
    )
    assert _one_line(message) == (
        "Could not translate MLIR to FlatBuffer: 'tf.Mean' op is neither a custom op nor a flex "
        "op [tf.Mean(tensor<?x1280x7x7xf32>, tensor<2xi64>) -> (tensor<?x1280x1x1xf32>)]"
    )
