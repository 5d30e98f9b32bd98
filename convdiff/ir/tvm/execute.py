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
    return Compiled(vm, input_shape(mod), exposed, info)


def input_shape(mod: Any) -> list[int]:
    """The shape of ``main``'s first parameter (-1 for a dynamic dimension)."""
    return shape_of(mod["main"].params[0].ty)


@dataclass
class Forced:
    """A module compiled so that chosen tensors can be fed from outside (see :func:`_force`):
    ``main(x, *forced)`` returns ``(output, *measured)``."""

    vm: Any
    forced: list[Exposed]  # the tensors fed in, in main's parameter order after x
    measured: list[Exposed]  # the tensors returned, each computed from the fed ones
    skipped: dict[str, str]  # raw layer id -> why it could not be fed or measured


def compile_forced(mod: Any, forced: dict[str, int], measured: list[str]) -> Forced:
    """Compile ``mod`` for llvm with the tensors of raw layers ``forced`` (id -> the number
    of values per image that will be fed) as extra inputs of ``main`` and those of
    ``measured`` as extra outputs (:func:`_force`)."""
    import tvm
    from tvm import relax

    rebuilt, fed, out, skipped = _force(mod, forced, measured)
    executable = tvm.compile(rebuilt, target="llvm")
    return Forced(relax.VirtualMachine(executable, tvm.cpu()), fed, out, skipped)


def run_forced(
    compiled: Forced, x: np.ndarray, values: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run one image ``x`` (batch of 1, the module's layout) with the fed tensors given in
    *logical* layout per raw layer id; the measured tensors back in logical layout (a fed
    tensor missing from ``values`` is fed the module's own value: a first plain run)."""
    import tvm

    args = [tvm.runtime.tensor(np.ascontiguousarray(x))]
    for lid, var, perm in compiled.forced:
        shape = shape_of(var.ty)
        logical = [shape[i] for i in np.argsort(perm)] if len(perm) == len(shape) else shape
        array = np.asarray(values[lid], np.float32).reshape(logical)  # one -1 at most
        if len(perm) == len(shape) and perm != identity_perm(len(shape)):
            array = array.transpose(perm)
        args.append(tvm.runtime.tensor(np.ascontiguousarray(array)))
    result = compiled.vm["main"](*args)
    values_out = list(result)[1:]
    return {
        lid: _logical_array(value, perm)
        for (lid, _, perm), value in zip(compiled.measured, values_out, strict=True)
    }


def _force(
    mod: Any, forced: dict[str, int], measured: list[str]
) -> tuple[Any, list[Exposed], list[Exposed], dict[str, str]]:
    """``mod`` whose ``main`` takes the tensors of raw layers ``forced`` as extra parameters
    and returns those of ``measured`` after its output.

    Every *use* of a fed tensor reads the parameter, while its own binding stays and can be
    measured: the module then computes each measured tensor from the fed ones before it,
    which is what a segment between two anchors computes on the source's activations.
    """
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    plain = relax.transform.ToNonDataflow()(mod)
    original, extractor = Extractor(mod), Extractor(plain)
    tensors = _tensors_by_original_id(original, extractor)
    if tensors is None:
        raise ValueError("layers changed under ToNonDataflow; nothing can be fed")
    skipped: dict[str, str] = {}
    fed: list[Exposed] = []
    for lid, size in forced.items():
        if lid not in tensors:
            skipped[lid] = "not a tensor of the module"
        elif not isinstance(tensors[lid][0].ty, relax.TensorType):
            skipped[lid] = "a tuple, not a tensor"
        elif not _holds(shape_of(tensors[lid][0].ty), size):
            skipped[lid] = f"holds {_show(shape_of(tensors[lid][0].ty))}, fed {size} values"
        else:
            fed.append((lid, *tensors[lid]))
    out = [(lid, *tensors[lid]) for lid in dict.fromkeys(measured) if lid in tensors]
    skipped.update({lid: "not a tensor of the module" for lid in measured if lid not in tensors})
    params = [relax.Var(f"fed_{i}", var.ty) for i, (_, var, _) in enumerate(fed)]
    substitute = {var.id_: param for (_, var, _), param in zip(fed, params, strict=True)}

    @mutator
    class _Feed(PyExprMutator):  # type: ignore[misc]
        def visit_var_(self, op: Any) -> Any:
            return substitute.get(op.id_, op)

    feed = _Feed()
    func = plain["main"]
    blocks = []
    for block in func.body.blocks:
        bindings = []
        for binding in block.bindings:
            value = feed.visit_expr(binding.value)
            if isinstance(binding, relax.MatchCast):
                bindings.append(relax.MatchCast(binding.var, value, binding.ty))
            else:
                bindings.append(relax.VarBinding(binding.var, value))
        blocks.append(relax.BindingBlock(bindings))
    fields = [feed.visit_expr(func.body.body)] + [var for _, var, _ in out]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(blocks, relax.Tuple(fields)))
    plain["main"] = relax.Function(list(func.params) + params, body, None, func.is_pure, func.attrs)
    return plain, fed, out, skipped


def _tensors_by_original_id(
    original: Extractor, plain: Extractor
) -> dict[str, tuple[Any, tuple[int, ...]]] | None:
    """The (var, perm) of each layer of the ToNonDataflow'd module, under the ids the original
    module's layers have (the ids import_graph wrote): the two walks give the same layers in
    the same order, though a var may be renamed (a MatchCast's becomes the output's ``gv``).
    None when the layers themselves differ."""
    before = original.run({}).layers
    after = plain.run({}).layers
    if [lay.op for lay in before] != [lay.op for lay in after]:
        return None
    tensors = plain.graph.tensors
    return {
        old.id: tensors[new.id] for old, new in zip(before, after, strict=True) if new.id in tensors
    }


def _holds(shape: list[int], size: int) -> bool:
    """Can a tensor of ``shape`` (-1: dynamic, one at most, the batch of 1 image) take
    ``size`` values? A dynamic axis takes what the fixed ones leave."""
    fixed = int(np.prod([d for d in shape if d >= 0]))
    dynamic = sum(d < 0 for d in shape)
    if dynamic > 1 or fixed == 0:
        return False
    return size == fixed if dynamic == 0 else size % fixed == 0


def _show(shape: list[int]) -> str:
    return "x".join("?" if d < 0 else str(d) for d in shape)


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
    if compiled.exposed:  # one image per call: a tensor may merge the batch with tokens
        step = 1
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
                    acts[lid].append(_one_image(_logical_array(value, perm)))
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
    tensors = _tensors_by_original_id(original, extractor)
    if tensors is None:
        return mod, [], {"error": "layers changed under ToNonDataflow; no activations"}
    exposed = [(lid, *tensors[lid]) for lid in layers if lid in tensors]
    missing = [lid for lid in layers if lid not in tensors]
    func = plain["main"]
    fields = [func.body.body] + [var for _, var, _ in exposed]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple(fields)))
    plain["main"] = relax.Function(func.params, body, None, func.is_pure, func.attrs)
    return plain, exposed, {"layers": [lid for lid, _, _ in exposed], "missing": missing}


def _one_image(array: np.ndarray) -> np.ndarray:
    """One image's tensor with a leading batch axis of 1, whatever its own axis 0 is (a
    transformer's dense layer may see ``[tokens, features]``)."""
    return array if array.shape[:1] == (1,) else array[None]


def _logical_array(value: Any, perm: tuple[int, ...]) -> np.ndarray:
    """A runtime tensor (or BatchNorm's tuple: its field 0) in logical axis order."""
    if not hasattr(value, "numpy"):
        value = value[0]
    array = value.numpy()
    if len(perm) == array.ndim and perm != identity_perm(array.ndim):
        array = array.transpose(np.argsort(perm))
    return np.asarray(array, dtype=np.float32)
