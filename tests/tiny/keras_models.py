"""Child-side builders of tiny seeded Keras models (run them in a ``tf`` worker).

Each builder writes the model, an input batch (``inputs.npz``, key ``x``, NHWC) and the
outputs Keras itself computes on it (``reference.npz``, key ``y``), so a test can check any
framework or converter against the model's builder without importing TensorFlow.

BatchNorm statistics are set to seeded, non-trivial values: with the defaults (mean 0, var 1)
a converter that drops or mis-folds BatchNorm would go unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUT_SHAPE = (8, 8, 3)
CLASSES = 5
# TFLite's dynamic-range quantization leaves weights with fewer than 1024 elements in float32;
# 48 filters give the convolution 3*3*3*48 = 1296 weights, so it is quantized to int8.
QUANTIZABLE_FILTERS = 48


def build_tiny_cnn(
    out_dir: str,
    filters: int = 4,
    batch_size: int | None = None,
    samples: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Input(8,8,3) -> Conv2D(same) -> BatchNorm -> ReLU -> GAP -> Dense(5) -> softmax.

    ``batch_size`` fixes the batch dimension (1 gives a model that must be fed slice by slice).
    Returns the paths of ``model.keras``, ``model.h5``, ``inputs.npz`` and ``reference.npz``.
    """
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = keras.Input(INPUT_SHAPE, batch_size=batch_size, name="image")
    x = keras.layers.Conv2D(filters, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(CLASSES, name="dense")(x)
    outputs = keras.layers.Softmax(name="softmax")(x)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    model.get_layer("bn").set_weights(
        [
            rng.uniform(0.5, 1.5, filters).astype(np.float32),  # gamma
            rng.normal(0.0, 0.5, filters).astype(np.float32),  # beta
            rng.normal(0.0, 0.3, filters).astype(np.float32),  # moving mean
            rng.uniform(0.5, 2.0, filters).astype(np.float32),  # moving variance
        ]
    )
    dense = model.get_layer("dense")
    kernel, bias = dense.get_weights()
    # A wider logit range keeps the softmax far from uniform, so differences show.
    dense.set_weights([kernel * 4.0, rng.normal(0.0, 0.5, CLASSES).astype(np.float32)])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_batch = rng.uniform(-1.0, 1.0, (samples, *INPUT_SHAPE)).astype(np.float32)
    y_batch = np.asarray(model(x_batch, training=False))
    paths = {
        "keras": str(out / "model.keras"),
        "h5": str(out / "model.h5"),
        "inputs": str(out / "inputs.npz"),
        "reference": str(out / "reference.npz"),
    }
    model.save(paths["keras"])
    model.save(paths["h5"])
    np.savez(paths["inputs"], x=x_batch)
    np.savez(paths["reference"], y=y_batch)
    return paths


def build_tiny_upsample(out_dir: str, interpolation: str = "bilinear", seed: int = 0) -> str:
    """Input(8,8,3) -> Conv2D(same) -> UpSampling2D(2, ``interpolation``) -> Conv2D(same) ->
    Flatten -> Dense(5) -> softmax: one resize, whose sampling every output reads. The path of
    ``model.keras``."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.UpSampling2D(2, interpolation=interpolation, name="upsample")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(CLASSES, name="dense")(x)
    outputs = keras.layers.Softmax(name="softmax")(x)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs, name="tiny_upsample").save(out / "model.keras")
    return str(out / "model.keras")


def scale_kernel(path: str, layer: str, factor: float, out: str) -> str:
    """A copy of the Keras model at ``path`` with ``layer``'s kernel times ``factor`` (loaded
    as convdiff loads models: onnx2keras writes Lambda layers)."""
    from convdiff.core.trust import record_written
    from convdiff.frameworks.keras import load, make_lambdas_serializable

    model = load(path)
    weights = model.get_layer(layer).get_weights()
    model.get_layer(layer).set_weights([weights[0] * factor, *weights[1:]])
    make_lambdas_serializable(model)
    model.save(out)
    # the injected fault stands for a converter's output: convdiff loads it as its own
    record_written(out)
    return out


def write_saved_model(keras_path: str, out_dir: str) -> str:
    """Export a .keras model as a SavedModel folder (Keras 3 ``model.export``)."""
    import keras

    model = keras.saving.load_model(keras_path, compile=False)
    model.export(out_dir, verbose=False)
    return out_dir


def build_tiny_sequential(out_dir: str, seed: int = 0) -> dict[str, Any]:
    """A Keras 3 Sequential model: the kind ``tf2onnx.convert.from_keras`` fails on."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(CLASSES, name="dense"),
        ],
        name="tiny_sequential",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_batch = rng.uniform(-1.0, 1.0, (4, *INPUT_SHAPE)).astype(np.float32)
    paths = {
        "keras": str(out / "model.keras"),
        "inputs": str(out / "inputs.npz"),
        "reference": str(out / "reference.npz"),
    }
    model.save(paths["keras"])
    np.savez(paths["inputs"], x=x_batch)
    np.savez(paths["reference"], y=np.asarray(model(x_batch, training=False)))
    return paths


def image_data_format() -> str:
    """The worker's global Keras image data format (onnx2keras changes it while it runs)."""
    import keras

    return keras.backend.image_data_format()


def build_tiny_onnx(
    out_dir: str, batch: int | None = 1, samples: int = 4, seed: int = 0
) -> dict[str, Any]:
    """The tiny CNN as an NCHW ONNX graph in the shape a torch export has (opset 13).

    Conv(pad 1) -> BatchNormalization -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax,
    written with ``onnx.helper`` (no framework needed, so it also runs in the test process).
    ``batch`` None makes the batch dimension symbolic (``"batch"``). The reference output is
    computed here in plain numpy, independently of any runtime. The inputs are saved NHWC,
    as ``convdiff.runtime.tasks.infer`` expects, and transposed to NCHW at the model's boundary.
    """
    from onnx import helper

    from tests.tiny.onnx_models import save_graph

    rng = np.random.default_rng(seed)
    channels, filters = INPUT_SHAPE[2], 4
    weights = {
        "W": rng.normal(0.0, 0.5, (filters, channels, 3, 3)),
        "B": rng.normal(0.0, 0.1, filters),
        "scale": rng.uniform(0.5, 1.5, filters),
        "shift": rng.normal(0.0, 0.5, filters),
        "mean": rng.normal(0.0, 0.3, filters),
        "var": rng.uniform(0.5, 2.0, filters),
        "G": rng.normal(0.0, 1.0, (CLASSES, filters)),
        "GB": rng.normal(0.0, 0.5, CLASSES),
    }
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["conv", "scale", "shift", "mean", "var"], ["bn"], epsilon=1e-3
        ),
        helper.make_node("Relu", ["bn"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "G", "GB"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["output"], axis=1),
    ]
    dim0: int | str = "batch" if batch is None else batch
    h, w, _ = INPUT_SHAPE

    x_nhwc = rng.uniform(-1.0, 1.0, (samples, *INPUT_SHAPE)).astype(np.float32)
    y = _numpy_tiny_cnn(x_nhwc.transpose(0, 3, 1, 2), weights)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "onnx": str(out / "model.onnx"),
        "inputs": str(out / "inputs.npz"),
        "reference": str(out / "reference.npz"),
    }
    save_graph(
        paths["onnx"],
        nodes,
        "tiny_onnx",
        [dim0, channels, h, w],
        "output",
        [dim0, CLASSES],
        weights,
    )
    np.savez(paths["inputs"], x=x_nhwc)
    np.savez(paths["reference"], y=y)
    return paths


def _numpy_tiny_cnn(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """What :func:`build_tiny_onnx`'s graph computes, in float64 numpy (NCHW input)."""
    x = x.astype(np.float64)
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack(
        [padded[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=-1
    )  # n, c, h, w, 9
    kernel = p["W"].reshape(p["W"].shape[0], p["W"].shape[1], 9).astype(np.float64)
    conv = np.einsum("nchwk,fck->nfhw", patches, kernel) + p["B"][None, :, None, None]
    bn = (conv - p["mean"][None, :, None, None]) / np.sqrt(p["var"][None, :, None, None] + 1e-3)
    bn = bn * p["scale"][None, :, None, None] + p["shift"][None, :, None, None]
    pooled = np.maximum(bn, 0.0).mean(axis=(2, 3))
    logits = pooled @ p["G"].T.astype(np.float64) + p["GB"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
