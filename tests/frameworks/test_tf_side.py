"""Keras, SavedModel, TFLite and ONNX runtimes: load, describe and predict a tiny model.

Every model is built by a child-side helper that also saves the output its builder computed
(Keras for the Keras models, plain numpy for the hand-made ONNX graph), and each runtime must
reproduce it through the probe and infer tasks (:mod:`convdiff.runtime.client`) in its own
worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import convert, ok
from tests.tiny.keras_models import build_tiny_onnx

KERAS = "tests.tiny.keras_models"


@pytest.fixture(scope="module")
def tiny_batch1(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("tiny-keras-batch1")
    return ok(pool.call("tf", f"{KERAS}:build_tiny_cnn", out_dir=str(out), batch_size=1))


def _probe(pool: WorkerPool, framework: str, path: str) -> dict[str, Any]:
    value = ok(client.probe(pool, framework, path))
    value.pop("load_seconds")
    return value


def _infer(
    pool: WorkerPool,
    framework: str,
    path: str,
    inputs: str,
    tmp: Path,
    layout: str = "NHWC",
    batch_size: int = 8,
) -> np.ndarray:
    out = tmp / f"{framework}-{Path(path).stem}-y.npz"
    value = ok(
        client.infer(pool, framework, path, inputs, out, layout=layout, batch_size=batch_size)
    )
    with np.load(out) as data:
        y = data["y"]
    assert value["output_shape"] == list(y.shape)
    return y


def _reference(paths: dict[str, str]) -> np.ndarray:
    with np.load(paths["reference"]) as data:
        return data["y"]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_reproduces_its_builder(
    pool: WorkerPool, keras_cnn: dict[str, str], fmt: str, tmp_path: Path
) -> None:
    assert _probe(pool, "keras", keras_cnn[fmt]) == {
        "input_shape": [None, 8, 8, 3],
        "input_dtype": "float32",
        "output_shape": [None, 5],
        "input_name": "image",
        "inputs": 1,
    }
    y = _infer(pool, "keras", keras_cnn[fmt], keras_cnn["inputs"], tmp_path, batch_size=3)
    assert y.shape == (4, 5)
    assert np.abs(y - _reference(keras_cnn)).max() < 1e-6


def test_keras_fixed_batch_is_fed_in_slices(
    pool: WorkerPool, tiny_batch1: dict[str, str], tmp_path: Path
) -> None:
    assert _probe(pool, "keras", tiny_batch1["keras"])["input_shape"] == [1, 8, 8, 3]
    y = _infer(pool, "keras", tiny_batch1["keras"], tiny_batch1["inputs"], tmp_path)
    assert np.abs(y - _reference(tiny_batch1)).max() < 1e-6


def test_saved_model_serving_signature(
    pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path
) -> None:
    folder = ok(
        pool.call(
            "tf",
            f"{KERAS}:write_saved_model",
            keras_path=keras_cnn["keras"],
            out_dir=str(tmp_path / "saved_model"),
        )
    )
    assert _probe(pool, "tf", folder) == {
        "input_shape": [None, 8, 8, 3],
        "input_dtype": "float32",
        "output_shape": [None, 5],
        "input_name": "image",
        "inputs": 1,
    }
    y = _infer(pool, "tf", folder, keras_cnn["inputs"], tmp_path)
    assert np.abs(y - _reference(keras_cnn)).max() < 1e-6


def test_tflite_free_batch_is_resized(
    pool: WorkerPool, keras_cnn: dict[str, str], tmp_path: Path
) -> None:
    path = convert(pool, "keras", "tflite", keras_cnn["keras"], tmp_path)
    assert _probe(pool, "tflite", path) == {
        "input_shape": [None, 8, 8, 3],
        "input_dtype": "float32",
        "output_shape": [None, 5],
        "input_name": "serving_default_image:0",
        "inputs": 1,
    }
    y = _infer(pool, "tflite", path, keras_cnn["inputs"], tmp_path, batch_size=3)
    assert np.abs(y - _reference(keras_cnn)).max() < 1e-5


def test_tflite_fixed_batch_is_fed_in_slices(
    pool: WorkerPool, tiny_batch1: dict[str, str], tmp_path: Path
) -> None:
    path = convert(pool, "keras", "tflite", tiny_batch1["keras"], tmp_path)
    description = _probe(pool, "tflite", path)
    assert description["input_shape"] == [1, 8, 8, 3]
    assert description["output_shape"] == [1, 5]
    y = _infer(pool, "tflite", path, tiny_batch1["inputs"], tmp_path)
    assert np.abs(y - _reference(tiny_batch1)).max() < 1e-5


@pytest.mark.parametrize("batch", [1, None])
def test_onnx_matches_numpy(pool: WorkerPool, batch: int | None, tmp_path: Path) -> None:
    built = build_tiny_onnx(str(tmp_path), batch=batch)
    assert _probe(pool, "onnx", built["onnx"]) == {
        "input_shape": [batch, 3, 8, 8],
        "input_dtype": "float32",
        "output_shape": [batch, 5],
        "input_name": "input",
        "inputs": 1,
    }
    y = _infer(pool, "onnx", built["onnx"], built["inputs"], tmp_path, layout="NCHW")
    assert np.abs(y - _reference(built)).max() < 1e-6
