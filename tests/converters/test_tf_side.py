"""TF-side converter edges, each run through the convert task (``client.convert``) in a real
worker.

Every edge converts a tiny seeded model, then source and target run on the same batch in their
own workers (``client.infer``) and are compared. Float conversions must agree within
1e-5; quantizing ones must show their quantized tensors and a bounded difference. Bounds are
set around values measured here (TF 2.21.0, tf2onnx 1.17.0, LiteRT 2.3.0, onnx2keras 0.0.25).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tflite

from convdiff.converters import edge
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import convert, infer, ok
from tests.tiny.keras_models import build_tiny_onnx

KERAS = "tests.tiny.keras_models"
TF_SIDE_EDGES = {
    ("keras", "tflite"): "TFLiteConverter",
    ("tf", "tflite"): "TFLiteConverter",
    ("keras", "onnx"): "tf2onnx",
    ("tf", "onnx"): "tf2onnx",
    ("tflite", "onnx"): "tf2onnx",
    ("onnx", "keras"): "onnx2keras",
    ("keras", "tf"): "keras.Model.export",
}


@pytest.fixture(scope="module")
def saved_model(pool: WorkerPool, keras_cnn: dict[str, str], tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny-sm") / "saved_model"
    task = f"{KERAS}:write_saved_model"
    return ok(pool.call("tf", task, keras_path=keras_cnn["keras"], out_dir=str(out)))


def _convert(pool: WorkerPool, src: str, dst: str, path: str, out_dir: Path, **options: Any) -> str:
    converted = convert(pool, src, dst, path, out_dir, edge(src, dst).worker, **options)
    assert Path(converted).exists()
    return converted


def _infer(
    pool: WorkerPool, framework: str, path: str, inputs: str, layout: str = "NHWC"
) -> np.ndarray:
    out = Path(path).parent / f"y-{framework}-{Path(path).name}.npz"
    return infer(pool, framework, path, inputs, out, layout=layout)


def _diff(
    pool: WorkerPool, src: tuple[str, str], dst: tuple[str, str], inputs: str, layout: str = "NHWC"
) -> float:
    a = _infer(pool, *src, inputs, layout)
    b = _infer(pool, *dst, inputs, layout)
    assert a.shape == b.shape == (4, 5)
    return float(np.abs(a - b).max())


def _tflite_weight_types(path: str) -> dict[str, set[int]]:
    """TensorType values of the 4-D (conv kernel) and 2-D (dense kernel) constant tensors."""
    model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    types: dict[str, set[int]] = {"conv": set(), "dense": set()}
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        if model.Buffers(tensor.Buffer()).DataLength() == 0:
            continue  # not a constant
        rank = tensor.ShapeLength()
        if rank in (2, 4):
            types["conv" if rank == 4 else "dense"].add(tensor.Type())
    return types


def test_edges_are_registered_with_their_tools() -> None:
    for (src, dst), tool in TF_SIDE_EDGES.items():
        info = edge(src, dst)
        assert (info.tool, info.worker) == (tool, "tf")
    assert edge("tf", "onnx").tool_version() == "tf2onnx 1.17.0, tensorflow 2.21.0, onnx 1.23.2"
    assert edge("keras", "tflite").options == ("tflite_opt", "tflite_io")
    assert edge("keras", "onnx").options == ("opset",)


def test_keras_to_tflite_float(pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path) -> None:
    path = _convert(pool, "keras", "tflite", keras_cnn["keras"], tmp_path)
    assert _tflite_weight_types(path) == {
        "conv": {tflite.TensorType.FLOAT32},
        "dense": {tflite.TensorType.FLOAT32},
    }
    assert _diff(pool, ("keras", keras_cnn["keras"]), ("tflite", path), keras_cnn["inputs"]) < 1e-5


def test_dynamic_range_skips_small_tensors(
    pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path
) -> None:
    path = _convert(
        pool, "keras", "tflite", keras_cnn["keras"], tmp_path, tflite_opt="dynamic-range"
    )
    assert tflite.TensorType.INT8 not in set().union(*_tflite_weight_types(path).values())
    assert _diff(pool, ("keras", keras_cnn["keras"]), ("tflite", path), keras_cnn["inputs"]) < 1e-5


def test_dynamic_range_gives_int8_weights(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    path = _convert(
        pool, "keras", "tflite", keras_cnn_q["keras"], tmp_path, tflite_opt="dynamic-range"
    )
    types = _tflite_weight_types(path)
    assert types["conv"] == {tflite.TensorType.INT8}  # 1296 weights: quantized
    assert types["dense"] == {tflite.TensorType.FLOAT32}  # 240 weights: below the threshold
    diff = _diff(pool, ("keras", keras_cnn_q["keras"]), ("tflite", path), keras_cnn_q["inputs"])
    assert 2e-5 < diff < 2e-3  # measured 1.6e-4


def test_float16_gives_float16_weights(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    path = _convert(pool, "keras", "tflite", keras_cnn_q["keras"], tmp_path, tflite_opt="float16")
    assert _tflite_weight_types(path) == {
        "conv": {tflite.TensorType.FLOAT16},
        "dense": {tflite.TensorType.FLOAT16},
    }
    diff = _diff(pool, ("keras", keras_cnn_q["keras"]), ("tflite", path), keras_cnn_q["inputs"])
    assert 2e-5 < diff < 2e-3  # measured 3.2e-4


def test_unknown_tflite_opt_is_refused(
    pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path
) -> None:
    outcome = client.convert(
        pool, "tf", "keras", "tflite", keras_cnn["keras"], tmp_path, {"tflite_opt": "int4"}
    )
    assert not outcome
    assert outcome.message == (
        "unknown tflite_opt 'int4'; expected one of ('none', 'dynamic-range', 'float16', 'int8')"
    )


def test_tf_to_tflite(
    pool: WorkerPool, keras_cnn: dict[str, str], saved_model: str, tmp_path: Path
) -> None:
    path = _convert(pool, "tf", "tflite", saved_model, tmp_path)
    assert _diff(pool, ("tf", saved_model), ("tflite", path), keras_cnn["inputs"]) < 1e-5


def test_keras_to_tf(pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path) -> None:
    path = _convert(pool, "keras", "tf", keras_cnn["keras"], tmp_path)
    assert (Path(path) / "saved_model.pb").is_file()
    assert _diff(pool, ("keras", keras_cnn["keras"]), ("tf", path), keras_cnn["inputs"]) < 1e-5


def _onnx_facts(path: str) -> tuple[int, list[Any], set[str]]:
    model = onnx.load(path)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return opset, shape, {n.op_type for n in model.graph.node}


def test_keras_to_onnx_default_opset(
    pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path
) -> None:
    path = _convert(pool, "keras", "onnx", keras_cnn["keras"], tmp_path)
    opset, shape, _ = _onnx_facts(path)
    assert (opset, shape) == (15, [None, 8, 8, 3])  # tf2onnx's default opset; NHWC kept
    assert json.loads((tmp_path / "tf2onnx.json").read_text()) == {
        "tool": "tf2onnx",
        "route": "keras export -> saved_model (signature serving_default)",
        "requested_opset": None,
        "opset": 15,
    }
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    assert _diff(pool, ("keras", keras_cnn["keras"]), ("onnx", path), keras_cnn["inputs"]) < 1e-5


def test_keras_sequential_to_onnx(pool: WorkerPool, tmp_path: Path) -> None:
    """The SavedModel route converts the Sequential models ``from_keras`` fails on."""
    built = ok(pool.call("tf", f"{KERAS}:build_tiny_sequential", out_dir=str(tmp_path / "m")))
    path = _convert(pool, "keras", "onnx", built["keras"], tmp_path / "onnx", opset=13)
    assert _onnx_facts(path)[0] == 13
    assert _diff(pool, ("keras", built["keras"]), ("onnx", path), built["inputs"]) < 1e-5


def test_tf_to_onnx(
    pool: WorkerPool, keras_cnn: dict[str, str], saved_model: str, tmp_path: Path
) -> None:
    path = _convert(pool, "tf", "onnx", saved_model, tmp_path, opset=17)
    assert json.loads((tmp_path / "tf2onnx.json").read_text())["opset"] == 17
    assert _diff(pool, ("tf", saved_model), ("onnx", path), keras_cnn["inputs"]) < 1e-5


def test_tflite_to_onnx_float(pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path) -> None:
    tfl = _convert(pool, "keras", "tflite", keras_cnn["keras"], tmp_path / "tflite")
    path = _convert(pool, "tflite", "onnx", tfl, tmp_path / "onnx")
    assert _onnx_facts(path)[1] == [None, 8, 8, 3]
    assert _diff(pool, ("tflite", tfl), ("onnx", path), keras_cnn["inputs"]) < 1e-5


def test_tflite_to_onnx_keeps_int8_weights(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    """tf2onnx keeps the int8 kernel behind a DequantizeLinear and computes in float32, while
    LiteRT's hybrid kernels also quantize the activations at run time: the two part."""
    tfl = _convert(
        pool,
        "keras",
        "tflite",
        keras_cnn_q["keras"],
        tmp_path / "tflite",
        tflite_opt="dynamic-range",
    )
    path = _convert(pool, "tflite", "onnx", tfl, tmp_path / "onnx")
    assert "DequantizeLinear" in _onnx_facts(path)[2]
    int8 = [t for t in onnx.load(path).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    # the kernel and its per-output-channel zero points
    assert sorted(list(t.dims) for t in int8) == [[48], [48, 3, 3, 3]]
    vs_tflite = _diff(pool, ("tflite", tfl), ("onnx", path), keras_cnn_q["inputs"])
    vs_keras = _diff(pool, ("keras", keras_cnn_q["keras"]), ("onnx", path), keras_cnn_q["inputs"])
    assert 2e-5 < vs_tflite < 2e-3  # measured 1.3e-4
    assert 2e-5 < vs_keras < 2e-3  # measured 1.2e-4: the weights' rounding alone


def test_onnx2keras_crashes_on_tf2onnx_graph(
    pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path
) -> None:
    onnx_path = _convert(pool, "keras", "onnx", keras_cnn["keras"], tmp_path / "onnx")
    outcome = client.convert(pool, "tf", "onnx", "keras", onnx_path, tmp_path / "keras", {})
    assert not outcome
    assert (outcome.error_type, outcome.message) == (
        "ValueError",
        "Layer StatefulPartitionedCall_tiny_cnn_1_dense_1_MatMul:0 weight shape (1, 5) is not "
        "compatible with provided weight shape (4, 5).",
    )
    # the crash must not leave onnx2keras' channels_first setting behind in the worker
    assert ok(pool.call("tf", f"{KERAS}:image_data_format")) == "channels_last"


def test_onnx2keras_converts_torch_style_graph(pool: WorkerPool, tmp_path: Path) -> None:
    built = build_tiny_onnx(str(tmp_path / "src"), batch=None)
    path = _convert(pool, "onnx", "keras", built["onnx"], tmp_path / "keras")
    assert path.endswith("model.keras")
    description = ok(client.probe(pool, "keras", path))
    assert description["input_shape"] == [None, 3, 8, 8]  # the ONNX model's NCHW layout
    diff = _diff(pool, ("onnx", built["onnx"]), ("keras", path), built["inputs"], layout="NCHW")
    assert diff < 1e-5
