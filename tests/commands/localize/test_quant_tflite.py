"""`convdiff localize` on a full-integer TFLite file (``--tflite-opt int8``): TVM imports its
float twin (convdiff.ir.tflite_quant), and the weights stage gives exactly one precision finding
per layer computing in int8 -- on its weight where it has one (saying its activations' scales
and its int32 bias), on its activations where it has none -- and nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convdiff.commands.localize.flow import GRAPH_STAGES, LocalizeConfig, localize
from convdiff.core.progress import Progress
from convdiff.ir import tflite_quant
from convdiff.runtime.pool import WorkerPool
from tests.helpers import infer

pytestmark = pytest.mark.workers

CONV = (
    "tiny_cnn_1/relu_1/Relu;tiny_cnn_1/bn_1/batchnorm/add_1;tiny_cnn_1/conv_1/convolution;"
    "tiny_cnn_1/bn_1/batchnorm/sub1"
)
DENSE = "tiny_cnn_1/dense_1/MatMul;tiny_cnn_1/dense_1/BiasAdd"


def test_the_float_twin_computes_in_float_with_the_files_weights(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path
) -> None:
    twin = tflite_quant.float_twin(int8_tflite, tmp_path / "twin.tflite")
    model = tflite_quant.unpack(twin)
    graph = model.subgraphs[0]
    assert [tflite_quant.op_kind(model, op) for op in graph.operators] == [
        "CONV_2D",
        "MEAN",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    used = {int(t) for op in graph.operators for t in [*op.inputs, *op.outputs]}
    types = {tflite_quant.type_name(graph.tensors[t].type) for t in used}
    assert types == {"FLOAT32", "INT32"}  # INT32: the mean's axes
    assert not tflite_quant.is_full_integer(twin) and tflite_quant.quantized_ops(twin) == []
    # the twin runs on LiteRT: only the weights' rounding is left (the int8 file: 1/256 steps)
    inputs = keras_cnn_q["inputs"]
    with np.load(keras_cnn_q["reference"]) as data:
        keras_y = data["y"]
    twin_y = infer(pool, "tflite", twin, inputs, tmp_path / "twin.npz")
    int8_y = infer(pool, "tflite", int8_tflite, inputs, tmp_path / "int8.npz")
    assert float(np.abs(twin_y - keras_y).max()) < float(np.abs(int8_y - keras_y).max())
    assert float(np.abs(twin_y - keras_y).max()) < 5e-3  # measured 2.6e-3


def test_one_precision_finding_per_quantized_layer(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path
) -> None:
    layers = tflite_quant.quantized_ops(int8_tflite)
    assert [(op.kind, op.name) for op in layers] == [
        ("CONV_2D", CONV),
        ("MEAN", "tiny_cnn_1/gap_1/Mean"),
        ("FULLY_CONNECTED", DENSE),
        ("SOFTMAX", "StatefulPartitionedCall_1:01"),
    ]
    config = LocalizeConfig(
        keras_cnn_q["keras"], int8_tflite, stages=GRAPH_STAGES, out=tmp_path / "out"
    )
    report = localize(config, Progress(enabled=False), pool)
    assert report.crashes == []
    assert report.alignment["unmatched"] == 0
    found = [
        (f.stage, f.kind, f.source_layer, f.target_layer, f.evidence["param"])
        for f in report.findings
    ]
    assert found == [
        ("weights", "precision", "conv", CONV, "weight"),
        ("weights", "precision", "dense", DENSE, "weight"),
        ("weights", "precision", "gap", "tiny_cnn_1/gap_1/Mean", "activations"),
        ("weights", "precision", "softmax", "StatefulPartitionedCall_1:01", "activations"),
    ]
    assert len(report.findings) == len(layers)
    conv, dense, mean, softmax = report.findings
    assert conv.evidence["grid"] == "int8 in the target file (per-channel scales)"
    assert conv.evidence["activations"] == "int8" and conv.evidence["bias_dtype"] == "INT32"
    assert conv.evidence["output_scale"] == pytest.approx(layers[0].output.scale, rel=1e-5)
    assert conv.summary.endswith(
        f"; int8 activations (output scale {layers[0].output.scale:.4g}, zero point "
        f"{layers[0].output.zero_point}), int32 bias"
    )
    assert softmax.evidence["output_scale"] == 1 / 256  # TFLite's fixed softmax grid
    assert softmax.evidence["output_zero_point"] == -128
    assert mean.summary.startswith("pool_global_avg activations: precision lost: int8")
    assert softmax.score == pytest.approx(0.5 / 255)
    assert report.imports["target"]["notes"][0].startswith(
        "full-integer TFLite file: imported its float twin"
    )
    assert report.imports["target"]["refused"] is None


def test_the_tools_stage_blames_the_files_integer_activations(
    pool: WorkerPool, keras_cnn_q: dict[str, str], int8_tflite: str, tmp_path: Path
) -> None:
    """All five stages on the tiny model's images: LiteRT (int8) and TVM (the float twin) part
    by what the twin leaves out, the file's int8 activations, not by a LiteRT fault."""
    config = LocalizeConfig(
        keras_cnn_q["keras"],
        int8_tflite,
        out=tmp_path / "out",
        preprocess="inception",
    )
    report = localize(config, Progress(enabled=False), pool)
    assert report.crashes == []
    runtime = [f for f in report.findings if (f.stage, f.kind) == ("tools", "runtime")]
    assert len(runtime) == 1
    assert "the file's integer activations (quantized by its own ops)" in runtime[0].summary
    assert "hybrid" not in runtime[0].summary
    assert "float fallback" in runtime[0].suggestion
    assert not [f for f in report.faults if f.stage in ("hyperparams", "graph")]
