"""The weights stage on tensors read from the model files, when TVM cannot import one of them.

A failed TVM import leaves no graphs for the hyperparameter and graph stages, but the weights
stage needs only the parameters, which both files hold. They are read directly: ONNX and TFLite
here (protobuf and flatbuffer readers, no framework), torch and Keras in their framework's
worker (:func:`convdiff.runtime.client.file_weights`), each file's tensors become a graph of one
layer per tensor (:mod:`convdiff.ir.file_weights`), the layers are paired by content
(:func:`convdiff.ir.align.align` anchors first) and the weights stage compares the anchor
pairs. Tensors below the anchors' size (:data:`convdiff.ir.anchors.MIN_SIZE`: a 5-class bias, a
clip bound) are not compared: without a graph, nothing but file order places them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convdiff.inputs.source import SourceSpec
from convdiff.ir import file_weights
from convdiff.ir.align import Alignment, align
from convdiff.ir.anchors import MIN_SIZE
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from convdiff.stages import StageContext, weights
from convdiff.stages.findings import Finding

IN_PROCESS = ("onnx", "tflite")
IN_WORKERS = ("torch", "keras")


class FileReadError(Exception):
    """A model file whose tensors could not be read (the reason is the message)."""


def weights_from_files(
    pool: WorkerPool, source: SourceSpec, target: SourceSpec, out: Path
) -> tuple[list[Finding], str]:
    """The weights stage's findings on the tensors of both files, and a note that says how
    they were compared (or why they could not be: the findings are then empty)."""
    graphs = []
    for side, spec in (("source", source), ("target", target)):
        assert spec.file is not None  # localize compares two files
        try:
            tensors = read_tensors(pool, spec.framework, spec.file, out / f"{side}.npz")
            graphs.append(file_weights.graph_of(tensors, spec.framework, spec.file))
        except Exception as exc:  # a file the readers cannot take: a note, not a crash
            why = str(exc) if isinstance(exc, FileReadError) else f"{type(exc).__name__}: {exc}"
            return [], f"could not read the {side}'s tensors from {spec.file.name}: {why}"
    a, b = graphs
    alignment = align(a, b)
    moved = file_weights.match_layouts(a, b, alignment.anchors)
    anchored = {(x.a, x.b) for x in alignment.anchors}
    compared = Alignment(
        [p for p in alignment.pairs if (p.a, p.b) in anchored], [], alignment.anchors
    )
    findings = weights.run(StageContext(a, b, compared))
    note = (
        f"{len(compared.pairs)} of the source's {len(a) - 1} float tensors paired by content "
        f"with the target's {len(b) - 1} and compared; tensors under {MIN_SIZE} values are "
        "not compared, and BatchNorm is not folded (a per-channel scale of a conv may be a "
        "BatchNorm the converter folded into it)"
    )
    if moved:
        note += f"; target tensors transposed to the source's layout: {', '.join(moved)}"
    return findings, note


def read_tensors(
    pool: WorkerPool, framework: str, path: Path, npz: Path
) -> list[tuple[str, np.ndarray]]:
    """A file's float tensors in file order, in canonical layouts where the file says which."""
    try:
        if framework == "onnx":
            return file_weights.onnx_tensors(path)
        if framework == "tflite":
            return file_weights.tflite_tensors(path)
    except Exception as exc:  # a file the readers cannot parse: the stage reports that
        raise FileReadError(f"{type(exc).__name__}: {exc}") from exc
    if framework not in IN_WORKERS:
        raise FileReadError(f"reading {framework} files directly is not supported")
    npz.parent.mkdir(parents=True, exist_ok=True)
    outcome = client.file_weights(pool, framework, path, npz)
    if not outcome:
        raise FileReadError(f"{outcome.error_type or outcome.failure}: {outcome.message}")
    with np.load(npz) as data:
        tensors = [(name, data[name]) for name in outcome.value]
    return file_weights.keras_layouts(tensors) if framework == "keras" else tensors
