"""Rewrites of a torch.export program that TVM 0.27's ``from_exported_program`` needs, each
computing the same function as the graph it replaces; :func:`prepare` applies them all and
returns the import notes that say what changed.

- onnx2torch turns a constant ONNX Gather index into ``aten.item`` of a buffer, and TVM's
  ``select`` takes only a Python int ("value has to be scalar or Tensor", torchvision
  InceptionV3's ``transform_input``): :func:`fold_constant_items` puts the buffer's value in
  its place.
- A slice as long as its axis (``x[:, :C]`` of a tensor of C channels; every ``[:]``, as
  ``aten.slice.Tensor(x, 0, 0, 2**63 - 1)``) is a view of the whole tensor. Written to in
  place (timm GhostNet's ``out[:, :C] += shortcut``, 16 times), it becomes, in the
  decompositions TVM runs, ``slice_scatter(base, src, 0, 0, s77)`` over the symbolic batch,
  which TVM cannot compile ("ValueError: Expect value to be constant int") and whose ``s77``
  convdiff's extractor read as a tensor ("KeyError: s77"). :func:`drop_whole_slices` reads
  and writes the tensor itself instead, as the view did.

One converter replaces TVM's own (:func:`convert_map`, ``custom_convert_map`` of
``from_exported_program``):

- ``aten.div.Tensor_mode`` with a number divisor: TVM's ``_div`` makes the number an int32
  constant whatever the tensor's dtype, and ``floor_divide(float32, int32)`` is refused
  (timm EdgeNeXt's Fourier position encoding, ``torch.div(dim_t, 2, rounding_mode="floor")``
  of a float tensor: "TypeError: Binary operators must have the same datatype for both
  operands"). :func:`_div_mode` gives the number the tensor's dtype, as TVM's other binary
  converters do and as torch's type promotion does.

Runs in the ``tvm`` worker (torch beside TVM); torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def prepare(program: Any) -> list[str]:
    """Apply every rewrite to ``program`` (in place); one note per rewrite that changed it."""
    notes = []
    folded = fold_constant_items(program)
    if folded:
        notes.append(f"{folded} aten.item of a constant buffer folded to its value for TVM")
    dropped = drop_whole_slices(program)
    if dropped:
        notes.append(
            f"{dropped} aten.slice spanning its whole tensor replaced by the tensor for TVM"
        )
    if folded or dropped:  # the module's code follows its graph (decompositions trace it)
        program.graph_module.recompile()
    divisions = sum(1 for node in program.graph.nodes if _number_floor_division(node))
    if divisions:
        notes.append(
            f"{divisions} aten.div floor by a number imported with the number in the tensor's "
            "dtype (TVM's converter made it int32)"
        )
    return notes


def convert_map() -> dict[str, Callable[[Any, Any], Any]]:
    """Converters that replace TVM's own, for ``from_exported_program(custom_convert_map=)``."""
    return {"div.Tensor_mode": _div_mode}


def _div_mode(node: Any, importer: Any) -> Any:
    """``aten.div.Tensor_mode``: a floor division by a number, with the number in the
    tensor's dtype (a float number and an integer tensor stay TVM's, as does any other
    case)."""
    from tvm import relax

    if not _number_floor_division(node):
        return importer._div(node)
    x, y = importer.retrieve_args(node)[:2]
    dtype = str(x.ty.dtype)
    if isinstance(y, float) and "float" not in dtype:
        return importer._div(node)
    divisor = relax.const(y, dtype)
    return importer.block_builder.emit(relax.op.floor_divide(x, divisor))


def _number_floor_division(node: Any) -> bool:
    """An ``aten.div.Tensor_mode`` node that floors a tensor divided by a Python number."""
    import torch

    if node.op != "call_function" or node.target != torch.ops.aten.div.Tensor_mode:
        return False
    mode = node.kwargs.get("rounding_mode", node.args[2] if len(node.args) > 2 else None)
    divisor = node.args[1] if len(node.args) > 1 else None
    number = isinstance(divisor, (int, float)) and not isinstance(divisor, bool)
    return mode == "floor" and number


def fold_constant_items(program: Any) -> int:
    """Replace each ``aten.item`` whose input is a buffer or lifted constant (through dtype
    casts only) by its Python number in the arguments of the nodes that read it; the count.
    The graph computes the same thing: the buffer is a constant of the program."""
    import torch

    signature = program.graph_signature
    constants = {**signature.inputs_to_buffers, **signature.inputs_to_lifted_tensor_constants}
    values = {**program.state_dict, **program.constants}
    folded = 0
    for node in list(program.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.item.default:
            continue
        source, casts = node.args[0], []
        while source.op == "call_function" and source.target == torch.ops.aten.to.dtype:
            casts.append(source.args[1])
            source = source.args[0]
        value = values.get(constants.get(source.name, "")) if source.op == "placeholder" else None
        if value is None or value.numel() != 1:
            continue
        for dtype in reversed(casts):  # innermost cast first, as the graph does
            value = value.to(dtype)
        number = value.item()
        for user in list(node.users):
            user.args = tuple(number if arg is node else arg for arg in user.args)
        folded += 1
    program.graph.eliminate_dead_code()
    return folded


def drop_whole_slices(program: Any) -> int:
    """Replace each ``aten.slice.Tensor`` whose output has its input's shape by its input; the
    count. A slice (step >= 1) as long as its axis is the whole axis: the view is the tensor,
    so ops reading it, and in-place ops writing through it, see the same elements. A slice
    that is itself a graph output stays (the signature names it)."""
    import torch

    dropped = 0
    for node in list(program.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.slice.Tensor:
            continue
        base = node.args[0]
        if _shape(base) is None or _shape(base) != _shape(node):
            continue
        if any(user.op == "output" for user in node.users):
            continue
        node.replace_all_uses_with(base)
        program.graph.erase_node(node)
        dropped += 1
    return dropped


def _shape(node: Any) -> list[str] | None:
    """A node's shape from its fake tensor, symbolic sizes by name (``s77``)."""
    value = getattr(node, "meta", {}).get("val")
    shape = getattr(value, "shape", None)
    return None if shape is None else [str(d) for d in shape]
