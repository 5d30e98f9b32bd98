"""Child-side tasks: the functions the orchestrator names in ``WorkerPool.call``.

Each takes and returns JSON-able values; tensors travel as .npz files named by path. They run
inside a worker of the right kind (see :mod:`convdiff.runtime.pool`), so importing a framework here,
inside the function, is allowed.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.core.arrays import open_images
from convdiff.core.options import ConvertOptions
from convdiff.core.trust import record_written

# The models this worker loaded last, most recent last. A run streams batch after batch through
# every model of its chain, and two of them may share a worker (a Keras model and the SavedModel
# made from it both run in the tf worker): keeping a few saves a reload per batch. Not more than
# a few: a model can be gigabytes.
_LOADED: dict[tuple[str, str, float], Any] = {}
KEEP_LOADED = 3


def _load(module: Any, framework: str, path: str) -> Any:
    stamp = Path(path).stat().st_mtime if Path(path).exists() else 0.0
    key = (framework, str(Path(path).resolve()), stamp)
    if key in _LOADED:
        _LOADED[key] = _LOADED.pop(key)  # most recently used goes last
    else:
        while len(_LOADED) >= KEEP_LOADED:
            del _LOADED[next(iter(_LOADED))]
        _LOADED[key] = module.load(path)
    return _LOADED[key]


_HEAVY_IMPORTS = {
    "keras": ("tensorflow", "keras"),
    "tf": ("tensorflow",),
    "tflite": ("ai_edge_litert.interpreter",),
    "onnx": ("onnxruntime",),
    "torch": ("torch",),
}


def warm_up(framework: str) -> str:
    """Import a framework ahead of need, in a worker started early (WorkerPool.prestart)."""
    for name in _HEAVY_IMPORTS.get(framework, ()):
        importlib.import_module(name)
    return framework


def probe(framework: str, path: str) -> dict[str, Any]:
    """Load a model and describe its input and output, so the orchestrator can fit the data."""
    module = importlib.import_module(f"convdiff.frameworks.{framework}")
    started = time.perf_counter()
    model = _load(module, framework, path)
    description = module.describe(model)
    description["load_seconds"] = time.perf_counter() - started
    return description


def infer(
    framework: str,
    path: str,
    inputs: str,
    outputs: str,
    layout: str = "auto",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Run a model on the NHWC images of ``inputs`` (an .npz's ``x``, or an .npy read a batch at
    a time) and save its outputs: ``y`` of an .npz, or an .npy written batch by batch.

    The transposition to NCHW happens here, at the model's boundary, so every framework gets
    the very same pixels; ``auto`` reads the layout from the model's input shape. Load and
    inference times are measured apart: the benchmark needs them to tell convdiff's overhead
    from the framework's own work.
    """
    from convdiff.frameworks import FRAMEWORKS, layout_of

    module = importlib.import_module(f"convdiff.frameworks.{framework}")
    started = time.perf_counter()
    model = _load(module, framework, path)
    description = module.describe(model)
    loaded = time.perf_counter()
    x = open_images(inputs)  # an .npy stays on disk: read a batch at a time
    shape = list(description.get("input_shape") or [])
    if layout == "auto":
        layout = layout_of(shape, FRAMEWORKS[framework].layout)
    _check_fits(shape, layout, x.shape)
    y = None
    for i in range(0, len(x), batch_size):
        chunk = np.asarray(x[i : i + batch_size], dtype=np.float32)
        if layout == "NCHW":
            chunk = np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))
        out = np.asarray(module.predict(model, chunk), dtype=np.float32).reshape(len(chunk), -1)
        if y is None:
            y = _outputs_file(outputs, len(x), out.shape[1])
        y[i : i + len(chunk)] = out
    if y is None:
        y = np.zeros((0, 0), np.float32)
    finished = time.perf_counter()
    if outputs.endswith(".npy"):
        if isinstance(y, np.memmap):
            y.flush()
        else:
            np.save(outputs, y)
    else:
        np.savez(outputs, y=y)
    return {
        **description,
        "layout": layout,
        "load_seconds": loaded - started,
        "infer_seconds": finished - loaded,
        "output_shape": list(y.shape),
    }


def _outputs_file(outputs: str, images: int, classes: int) -> np.ndarray:
    """Where the outputs go as they come: an ``.npy`` file mapped into memory (written batch
    by batch, never whole in memory), or an array saved to the ``.npz`` at the end."""
    if outputs.endswith(".npy"):
        return np.lib.format.open_memmap(outputs, "w+", np.float32, (images, classes))
    return np.empty((images, classes), np.float32)


def _check_fits(shape: list[int | None], layout: str, nhwc: tuple[int, ...]) -> None:
    """Say plainly when a model wants other images than the run prepared."""
    if not shape:  # unknown (a TorchScript file keeps no input shape): nothing to check
        return
    if len(shape) != 4:
        raise ValueError(f"model input has shape {shape}; convdiff feeds one 4-D image batch")
    h, w, c = (shape[2], shape[3], shape[1]) if layout == "NCHW" else (shape[1], shape[2], shape[3])
    wanted = (h, w, c)
    given = (nhwc[1], nhwc[2], nhwc[3])
    if any(
        want is not None and want > 0 and want != got
        for want, got in zip(wanted, given, strict=True)
    ):
        raise ValueError(
            f"model takes {layout} input {shape}, but the images were prepared as "
            f"{given[0]}x{given[1]}x{given[2]}"
        )


def convert(
    src: str,
    dst: str,
    src_path: str,
    out_dir: str,
    options: dict[str, Any],
    input_shape: list[int | None] | None = None,
    tool: str | None = None,
    calibration: str | None = None,
) -> dict[str, Any]:
    """Run converter ``tool`` of edge ``src -> dst`` (its default tool when None) and return
    the artifact's path. ``calibration``: the run's images, for a tool that calibrates."""
    from convdiff.converters import edge

    info = edge(src, dst, tool)
    module_name, _, func_name = info.func.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    extra = {"calibration": Path(calibration)} if calibration else {}
    started = time.perf_counter()
    artifact = func(Path(src_path), Path(out_dir), ConvertOptions(**options), input_shape, **extra)
    seconds = time.perf_counter() - started
    record_written(artifact)  # convdiff's own output: it may load as such (core.trust)
    return {"path": str(artifact), "convert_seconds": seconds}
