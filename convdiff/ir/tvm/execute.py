"""Compiling a Relax module for llvm and running it: TVM as an independent runtime.

TVM's own kernels, not the framework's, so a file that runs differently here and on its native
runtime points at that runtime (:mod:`convdiff.stages.tools`). Untuned llvm takes seconds per
image on real models, so a task compiles a module ONCE and feeds it every image it needs, slice
by slice when the module's batch dimension is fixed.

Activations come from the same compile: ``main`` is rebuilt to return ``(output, *tensors)``
(:func:`_expose`), each tensor read back in *logical* axis order (NCHW for 4-D), under the raw
layer ids :func:`convdiff.ir.tvm.extract.extract` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convdiff.ir.tvm.builder import identity_perm, shape_of
from convdiff.ir.tvm.extract import Extractor

# (raw layer id, the Relax var holding its tensor, that tensor's physical->logical perm)
Exposed = tuple[str, Any, tuple[int, ...]]


@dataclass
class Compiled:
    """A module compiled for llvm, ready to run."""

    vm: Any  # relax.VirtualMachine
    input_shape: list[int]  # main's first param, -1 for a dynamic dimension
    exposed: list[Exposed]  # the intermediate tensors main also returns, in order
    activations: dict[str, Any] | None  # {"layers", "missing"}, {"error"}, or None: not asked


def compile_module(mod: Any, layers: list[str] | None = None) -> Compiled:
    """Compile ``mod`` for llvm; with ``layers`` (raw layer ids), ``main`` also returns their
    tensors (see :func:`_expose`)."""
    import tvm
    from tvm import relax

    compiled_mod, exposed, info = mod, [], None
    if layers:
        compiled_mod, exposed, info = _expose(mod, layers)
    executable = tvm.compile(compiled_mod, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return Compiled(vm, shape_of(mod["main"].params[0].ty), exposed, info)


def input_layout(layout: str, shape: list[int]) -> str:
    """``auto``: NCHW when the input's axis 1 holds 1 or 3 channels, else NHWC."""
    if layout != "auto":
        return layout
    return "NCHW" if len(shape) == 4 and shape[1] in (1, 3) else "NHWC"


def run(
    compiled: Compiled, x: np.ndarray, run_images: list[int], images: list[int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run the images ``run_images`` of ``x`` (indices, ascending); the outputs flattened per
    image, in that order, and per exposed layer its logical tensors for ``images`` (a subset of
    ``run_images``) stacked on axis 0 (layers that gave none are left out)."""
    import tvm

    shape = compiled.input_shape
    step = len(x) if shape and shape[0] < 0 else max(shape[0], 1) if shape else 1
    keep = set(images)
    chunks: list[np.ndarray] = []
    acts: dict[str, list[np.ndarray]] = {lid: [] for lid, _, _ in compiled.exposed}
    for i in range(0, len(run_images), step):
        index = run_images[i : i + step]
        result = compiled.vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x[index])))
        if compiled.exposed:  # (model output, *intermediate tensors)
            tensors, result = list(result)[1:], result[0]
            rows = [k for k, j in enumerate(index) if j in keep]
            for (lid, _, perm), value in zip(compiled.exposed, tensors, strict=True):
                if rows:
                    acts[lid].append(_logical_array(value, perm)[rows])
        if not hasattr(result, "numpy"):  # a tuple of outputs: the first is the prediction
            result = result[0]
        chunks.append(result.numpy().reshape(len(index), -1))
    y = np.concatenate(chunks).astype(np.float32)
    return y, {lid: np.concatenate(v) for lid, v in acts.items() if v}


def _expose(mod: Any, layers: list[str]) -> tuple[Any, list[Exposed], dict[str, Any]]:
    """``mod`` whose ``main`` also returns the tensors of raw layers ``layers``.

    ToNonDataflow turns DataflowVars into Vars (a dataflow var cannot leave its block); the
    new body returns ``(output, *vars)``. Layer ids come from running the extractor on the
    transformed module, checked equal to the original's: the ids the orchestrator asks for
    are those :func:`convdiff.ir.tvm.tasks.import_graph` wrote. Returns the module,
    ``(id, var, perm)`` per exposed layer, and ``{"layers", "missing"}`` (or ``{"error"}``
    with the original module).
    """
    from tvm import relax

    plain = relax.transform.ToNonDataflow()(mod)
    original, extractor = Extractor(mod), Extractor(plain)
    ids_before = [layer.id for layer in original.run({}).layers]
    ids_after = [layer.id for layer in extractor.run({}).layers]
    if ids_before != ids_after:
        return mod, [], {"error": "layer ids changed under ToNonDataflow; no activations"}
    tensors = extractor.graph.tensors
    exposed = [(lid, *tensors[lid]) for lid in layers if lid in tensors]
    missing = [lid for lid in layers if lid not in tensors]
    func = plain["main"]
    fields = [func.body.body] + [var for _, var, _ in exposed]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple(fields)))
    plain["main"] = relax.Function(func.params, body, None, func.is_pure, func.attrs)
    return plain, exposed, {"layers": [lid for lid, _, _ in exposed], "missing": missing}


def _logical_array(value: Any, perm: tuple[int, ...]) -> np.ndarray:
    """A runtime tensor (or BatchNorm's tuple: its field 0) in logical axis order."""
    if not hasattr(value, "numpy"):
        value = value[0]
    array = value.numpy()
    if len(perm) == array.ndim and perm != identity_perm(array.ndim):
        array = array.transpose(np.argsort(perm))
    return np.asarray(array, dtype=np.float32)
