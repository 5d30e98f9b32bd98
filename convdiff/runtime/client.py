"""Typed calls from the orchestrator into the workers.

Why one module: a task is named by an importable ``"module:function"`` string that the child
resolves (:mod:`convdiff.runtime.child`); spelled in one place, a task that moves or changes its
arguments is changed here, and callers get a Python signature to read and type-check instead of
a string and keyword arguments. Every call returns the pool's :class:`TaskOutcome` (a value, or
the failure as data); none raises for a failed task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from convdiff.core.options import DEFAULT_BATCH_SIZE
from convdiff.frameworks import framework as framework_info
from convdiff.runtime.pool import TaskOutcome, WorkerPool

Tick = Callable[[float], None] | None

TASKS = "convdiff.runtime.tasks"
TVM = "convdiff.ir.tvm.tasks"
BUILD = "convdiff.zoo.build:build"
TFLITE_FALLBACK = "convdiff.repair.fallback_tflite_tasks"  # runs in a tf worker
# format -> (worker kind, the applier module that runs in it): Keras and torch models are
# edited in their framework (:mod:`convdiff.repair.appliers`)
FALLBACK_ONNX = "convdiff.repair.fallback_onnx"
APPLIER_TASKS = {
    "keras": ("tf", "convdiff.repair.appliers.keras"),
    "torch": ("torch", "convdiff.repair.appliers.torch"),
}


def warm_up(pool: WorkerPool, framework: str) -> None:
    """Start ``framework``'s worker now and import the framework in it, while the caller does
    other work (:meth:`WorkerPool.prestart`)."""
    pool.prestart(framework_info(framework).worker, f"{TASKS}:warm_up", framework=framework)


def probe(pool: WorkerPool, framework: str, path: str | Path, on_tick: Tick = None) -> TaskOutcome:
    """Load a model in its runtime; the value describes its input and output."""
    info = framework_info(framework)
    return pool.call(
        info.worker, f"{TASKS}:probe", on_tick=on_tick, framework=info.name, path=str(path)
    )


def infer(
    pool: WorkerPool,
    framework: str,
    path: str | Path,
    inputs: str | Path,
    outputs: str | Path,
    *,
    layout: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_tick: Tick = None,
) -> TaskOutcome:
    """Run a model on ``x`` of the ``inputs`` npz; its outputs go to ``outputs`` (key ``y``)."""
    info = framework_info(framework)
    return pool.call(
        info.worker,
        f"{TASKS}:infer",
        on_tick=on_tick,
        framework=info.name,
        path=str(path),
        inputs=str(inputs),
        outputs=str(outputs),
        layout=layout,
        batch_size=batch_size,
    )


def convert(
    pool: WorkerPool,
    worker: str,
    src: str,
    dst: str,
    src_path: str | Path,
    out_dir: str | Path,
    options: dict[str, Any],
    *,
    input_shape: list[int | None] | None = None,
    tool: str | None = None,
    calibration: str | Path | None = None,
    on_tick: Tick = None,
) -> TaskOutcome:
    """Convert ``src_path`` with converter ``tool`` of edge ``src -> dst`` (the edge's default
    tool when None) in the worker of kind ``worker`` (``tf@onnx2tf==1.29.0`` runs in a tool
    environment); the value holds the new file's ``path`` and ``convert_seconds``.
    ``calibration``: an .npz of the run's images for a tool that calibrates."""
    return pool.call(
        worker,
        f"{TASKS}:convert",
        on_tick=on_tick,
        src=src,
        dst=dst,
        src_path=str(src_path),
        out_dir=str(out_dir),
        options=options,
        input_shape=input_shape,
        tool=tool,
        calibration=str(calibration) if calibration else None,
    )


def build(
    pool: WorkerPool,
    model: str,
    framework: str,
    weights: str,
    seed: int,
    calibration: str | Path | None,
    out_dir: str | Path,
    on_tick: Tick = None,
) -> TaskOutcome:
    """Build a zoo model with its weights policy (:mod:`convdiff.zoo.build`); ``calibration``:
    the .npz of images that calibrates random weights' BatchNorm (None: seeded noise)."""
    return pool.call(
        framework_info(framework).worker,
        BUILD,
        on_tick=on_tick,
        model=model,
        framework=framework,
        weights=weights,
        seed=seed,
        calibration=None if calibration is None else str(calibration),
        out_dir=str(out_dir),
    )


def import_graph(
    pool: WorkerPool, framework: str, path: str | Path, out_dir: str | Path
) -> TaskOutcome:
    """Import a model into TVM Relax and write its raw layer graph (JSON + npz)."""
    return pool.call(
        "tvm", f"{TVM}:import_graph", framework=framework, path=str(path), out_dir=str(out_dir)
    )


def run_tvm(
    pool: WorkerPool,
    framework: str,
    path: str | Path,
    inputs_npz: str | Path,
    outputs_npz: str | Path,
    *,
    layout: str = "auto",
    layers: list[str] | None = None,
    images: list[int] | None = None,
    activations_npz: str | Path | None = None,
    run_images: list[int] | None = None,
) -> TaskOutcome:
    """Compile a model for llvm once and run it; optionally return intermediate tensors."""
    return pool.call(
        "tvm",
        f"{TVM}:run_tvm",
        framework=framework,
        path=str(path),
        inputs_npz=str(inputs_npz),
        outputs_npz=str(outputs_npz),
        layout=layout,
        layers=layers,
        images=images,
        activations_npz=None if activations_npz is None else str(activations_npz),
        run_images=run_images,
    )


def run_tvm_forced(
    pool: WorkerPool,
    framework: str,
    path: str | Path,
    inputs_npz: str | Path,
    *,
    images: list[int],
    fed_npz: str | Path,
    measured: list[str],
    out_npz: str | Path,
    layout: str = "auto",
) -> TaskOutcome:
    """Run a model on TVM with some of its tensors fed from another model's activations."""
    return pool.call(
        "tvm",
        f"{TVM}:run_tvm_forced",
        framework=framework,
        path=str(path),
        inputs_npz=str(inputs_npz),
        images=images,
        fed_npz=str(fed_npz),
        measured=measured,
        out_npz=str(out_npz),
        layout=layout,
    )


def file_weights(
    pool: WorkerPool, framework: str, path: str | Path, out_npz: str | Path
) -> TaskOutcome:
    """A torch or Keras model file's float weights to ``out_npz``, read in its framework's
    worker; the value lists their names in file order (:mod:`convdiff.ir.file_weights`)."""
    info = framework_info(framework)
    return pool.call(
        info.worker,
        f"{info.module}:file_weights",
        path=str(path),
        out_npz=str(out_npz),
    )


def torch_file_ops(pool: WorkerPool, path: str | Path) -> TaskOutcome:
    """``[kind, name, index]`` of each node of a torch.export program TVM makes a layer of."""
    return pool.call("torch", f"{APPLIER_TASKS['torch'][1]}:file_ops", path=str(path))


def keras_layer_classes(pool: WorkerPool, path: str | Path) -> TaskOutcome:
    """A Keras model's layer names and their class names."""
    return pool.call("tf", f"{APPLIER_TASKS['keras'][1]}:layer_classes", path=str(path))


def read_tensor(
    pool: WorkerPool, fmt: str, path: str | Path, layer: str, field: str, out_npz: str | Path
) -> TaskOutcome:
    """Write a Keras/torch layer's weight or bias to ``out_npz`` (key ``x``); the value is
    False when the layer has no such tensor."""
    kind, module = APPLIER_TASKS[fmt]
    return pool.call(
        kind,
        f"{module}:read_tensor_task",
        path=str(path),
        layer=layer,
        field=field,
        out_npz=str(out_npz),
    )


def apply_edits(
    pool: WorkerPool,
    fmt: str,
    target: str | Path,
    edits: list[dict[str, Any]],
    tensors_npz: str | Path,
    out: str | Path,
) -> TaskOutcome:
    """Apply edits (Edit JSON) to a Keras/torch model in its framework, saving to ``out``."""
    kind, module = APPLIER_TASKS[fmt]
    return pool.call(
        kind,
        f"{module}:apply_task",
        target=str(target),
        edits=edits,
        tensors_npz=str(tensors_npz),
        out=str(out),
    )


def tflite_fallback_measure(
    pool: WorkerPool,
    framework: str,
    source: str | Path,
    images: str | Path,
    layout: str,
    tflite_io: str,
    target: str | Path,
    on_tick: Tick = None,
) -> TaskOutcome:
    """Each quantized layer of a full-integer .tflite ``target`` with its error measured by
    TFLite's QuantizationDebugger on the calibration ``images`` (the Keras/SavedModel
    ``source`` converted and calibrated as the target was)."""
    return pool.call(
        "tf",
        f"{TFLITE_FALLBACK}:measure_layers",
        on_tick=on_tick,
        framework=framework,
        source=str(source),
        images=str(images),
        layout=layout,
        tflite_io=tflite_io,
        target=str(target),
    )


def tflite_fallback_write(
    pool: WorkerPool,
    framework: str,
    source: str | Path,
    images: str | Path,
    layout: str,
    tflite_io: str,
    target: str | Path,
    layers: list[str],
    out: str | Path,
    on_tick: Tick = None,
) -> TaskOutcome:
    """Write the full-integer ``target`` with ``layers`` (its own names) in float to ``out``,
    reconverted from ``source`` with QuantizationDebugger's denylist; the value holds ``path``
    and the written file's input and output types (``io``)."""
    return pool.call(
        "tf",
        f"{TFLITE_FALLBACK}:write_fallback",
        on_tick=on_tick,
        framework=framework,
        source=str(source),
        images=str(images),
        layout=layout,
        tflite_io=tflite_io,
        target=str(target),
        layers=list(layers),
        out=str(out),
    )


def fallback_errors(
    pool: WorkerPool, model: str | Path, images: str | Path, layers: int, on_tick: Tick = None
) -> TaskOutcome:
    """Run a switchable ONNX ``model`` (:func:`convdiff.repair.fallback_onnx.switchable`) on
    the NHWC ``images`` in the onnx worker: all layers in float, all quantized, and each of its
    ``layers`` alone quantized; the value gives each one's output error (``errors``)."""
    return pool.call(
        "onnx",
        f"{FALLBACK_ONNX}:switch_errors",
        on_tick=on_tick,
        model=str(model),
        images=str(images),
        layers=layers,
    )


__all__ = [
    "APPLIER_TASKS",
    "apply_edits",
    "build",
    "convert",
    "fallback_errors",
    "file_weights",
    "import_graph",
    "infer",
    "keras_layer_classes",
    "probe",
    "read_tensor",
    "run_tvm",
    "tflite_fallback_measure",
    "tflite_fallback_write",
    "torch_file_ops",
    "warm_up",
]
