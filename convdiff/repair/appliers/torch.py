"""Patch applier for torch.export programs (.pt2), and the names their layers go by.

Child side: runs in a ``torch`` worker (or the ``tvm`` worker, which imports torch too); the
orchestrator reaches it through :mod:`convdiff.repair.appliers.apply`, tensors travel as .npz files.

Names. TVM's ``from_exported_program`` emits one Relax op per aten op in graph order, so the
k-th ``aten.conv2d`` node is the k-th ``conv2d`` of TVM's raw graph (:func:`file_ops` lists
them for :func:`convdiff.ir.names.file_names`). A node is named by the module that owns its
first parameter or buffer (``layer1.0.conv1`` for ``layer1.0.conv1.weight``, from the
program's graph signature); a node without one (a pool, an activation) by the innermost
module of its ``nn_module_stack``; a name two nodes would share falls back to the nodes' own
(unique) graph names.

Same edits, same bytes: the program is saved through a buffer, so the archive's inner folder
is ``archive/`` whatever the output is called.

Edits. ``set_tensor`` replaces the parameter, buffer or constant in the program's state dict
(same shape and dtype; a tensor other ops also read is refused, as is a bias the op does not
have: both would need new graph inputs). ``set_attr`` rewrites the aten node's argument by its
schema name (stride, padding, dilation, groups, kernel_size, ceil_mode, count_include_pad, eps,
clamp bounds, softmax dim), then propagates shapes again so every node's recorded shape (what
TVM reads) is right. ``remove_node`` reconnects a single-input node's users to its input.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.core.trust import record_written
from convdiff.frameworks.torch import load_program

# aten op (overload packet name) -> the kind of TVM's raw layer it becomes
KINDS = {
    "conv2d": "conv2d",
    "convolution": "conv2d",
    "linear": "dense",
    "batch_norm": "batch_norm",
    "_native_batch_norm_legit_no_training": "batch_norm",
    "max_pool2d": "pool_max",
    "max_pool2d_with_indices": "pool_max",
    "avg_pool2d": "pool_avg",
    "adaptive_avg_pool2d": "pool_global_avg",
    "relu": "relu",
    "relu_": "relu",
    "hardtanh": "clip",
    "hardtanh_": "clip",
    "clamp": "clip",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "softmax": "softmax",
    "_softmax": "softmax",
    "cat": "concat",
    "concat": "concat",
    "layer_norm": "layer_norm",
    "native_layer_norm": "layer_norm",
}
# patch field -> the aten schema argument names that carry it
ARGS = {
    "strides": ("stride",),
    "pads": ("padding",),
    "dilation": ("dilation",),
    "groups": ("groups",),
    "kernel": ("kernel_size",),
    "ceil_mode": ("ceil_mode",),
    "count_include_pad": ("count_include_pad",),
    "epsilon": ("eps",),
    "clip_min": ("min_val", "min"),
    "clip_max": ("max_val", "max"),
    "axis": ("dim",),
}
TENSOR_ARG = {"weight": 1, "bias": 2}  # conv, linear, batch_norm: (input, weight, bias, ...)


class _Skip(Exception):
    """An edit this program cannot take; the message is the reason reported."""


# -- worker tasks ----------------------------------------------------------------------------


def file_ops(path: str) -> list[list[Any]]:
    """``[kind, name, index]`` of each node TVM makes a layer of, in graph order (``index``:
    the node's position in the graph)."""

    program = load_program(path)
    names = node_names(program)
    ops = []
    for i, node in enumerate(program.graph.nodes):
        kind = _kind(node)
        if kind:
            ops.append([kind, names[node.name], i])
    return ops


def read_tensor_task(path: str, layer: str, field: str, out_npz: str) -> bool:
    """Write the layer's weight/bias, exactly as stored, to ``out_npz`` (key ``x``); False
    when the layer has no such tensor."""

    program = load_program(path)
    try:
        key, _ = _tensor_key(program, _find(program, layer), field)
    except _Skip:
        return False
    np.savez(out_npz, x=_stored(program, key).detach().float().numpy())
    return True


def apply_task(target: str, edits: list[dict[str, Any]], tensors_npz: str, out: str) -> dict:
    """Apply ``edits`` (Edit JSON) to ``target`` and save the program to ``out``. Returns the
    indices of the applied edits and ``[index, reason]`` of the refused ones."""
    import torch

    program = load_program(target)
    tensors: dict[str, np.ndarray] = {}
    if tensors_npz and Path(tensors_npz).exists():
        with np.load(tensors_npz, allow_pickle=False) as data:
            tensors = {k: data[k] for k in data.files}
    applied: list[int] = []
    refused: list[list[Any]] = []
    reshaped = False
    for i, edit in enumerate(edits):
        try:
            node = _find(program, edit["layer"])
            if edit["action"] == "set_tensor":
                if edit["value"] not in tensors:
                    raise _Skip(f"the patch holds no tensor {edit['value']!r}")
                _set_tensor(program, node, edit["field"], tensors[edit["value"]])
            elif edit["action"] == "set_attr":
                _set_attr(node, edit["field"], edit["value"])
                reshaped = True
            elif edit["action"] == "remove_node":
                _remove_node(program, node)
                reshaped = True
            else:
                raise _Skip(f"the torch applier does not do {edit['action']!r}")
        except _Skip as skip:
            refused.append([i, str(skip)])
        else:
            applied.append(i)
    if reshaped:
        _propagate_shapes(program)
    buffer = io.BytesIO()  # a file name would become the archive's folder name: same bytes
    torch.export.save(program, buffer)  # for the same edits, whatever the output's name
    Path(out).write_bytes(buffer.getvalue())
    record_written(out)  # convdiff's own output (core.trust)
    return {"applied": applied, "refused": refused}


# -- names -----------------------------------------------------------------------------------


def node_names(program: Any) -> dict[str, str]:
    """Graph node name -> layer name, for the nodes :data:`KINDS` lists (module doc)."""
    keys = _input_keys(program)
    chosen: dict[str, str] = {}
    for node in program.graph.nodes:
        if not _kind(node):
            continue
        owner = next(
            (keys[a.name] for a in node.args[1:] if hasattr(a, "name") and a.name in keys), None
        )
        if owner is not None and "." in owner:
            chosen[node.name] = owner.rpartition(".")[0]
            continue
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        chosen[node.name] = path or node.name
    counts: dict[str, int] = {}
    for name in chosen.values():
        counts[name] = counts.get(name, 0) + 1
    return {node: name if counts[name] == 1 else node for node, name in chosen.items()}


def _kind(node: Any) -> str:
    if node.op != "call_function":
        return ""
    packet = str(node.target).split(".")
    kind = KINDS.get(packet[1], "") if len(packet) > 2 and packet[0] == "aten" else ""
    if kind == "pool_global_avg" and list(np.atleast_1d(node.args[1])) not in ([1, 1], [1]):
        return ""  # TVM makes a global pool only of a 1x1 output
    return kind


def _input_keys(program: Any) -> dict[str, str]:
    """Placeholder name -> state dict / constants key."""
    sig = program.graph_signature
    return {
        **sig.inputs_to_parameters,
        **sig.inputs_to_buffers,
        **sig.inputs_to_lifted_tensor_constants,
    }


def _find(program: Any, layer: str) -> Any:
    names = node_names(program)
    for node in program.graph.nodes:
        if names.get(node.name) == layer:
            return node
    raise _Skip(f"no layer named {layer!r} in the program")


# -- edits -----------------------------------------------------------------------------------


def _tensor_key(program: Any, node: Any, field: str) -> tuple[str, Any]:
    """The state dict key of a node's weight/bias argument, and its placeholder."""
    index = TENSOR_ARG.get(field)
    if index is None or _kind(node) not in ("conv2d", "dense", "batch_norm"):
        raise _Skip(f"{node.name} ({node.target}) has no {field} to set")
    arg = node.args[index] if len(node.args) > index else None
    keys = _input_keys(program)
    if arg is None or not hasattr(arg, "name") or arg.name not in keys:
        raise _Skip(
            f"{node.name} has no {field} input (adding one would add a graph input): "
            "export the model again with it"
        )
    return keys[arg.name], arg


def _stored(program: Any, key: str) -> Any:
    return program.state_dict[key] if key in program.state_dict else program.constants[key]


def _set_tensor(program: Any, node: Any, field: str, value: np.ndarray) -> None:
    import torch

    key, placeholder = _tensor_key(program, node, field)
    if len(placeholder.users) > 1:
        raise _Skip(f"{key} is read by {len(placeholder.users)} ops; setting it would change all")
    old = _stored(program, key)
    if tuple(old.shape) != tuple(value.shape):
        raise _Skip(
            f"{key} has shape {list(old.shape)}, the patch {list(value.shape)}: a shape change "
            "would change the exported graph"
        )
    new = torch.from_numpy(np.ascontiguousarray(value)).to(old.dtype)
    if isinstance(old, torch.nn.Parameter):
        new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
    if key in program.state_dict:
        program.state_dict[key] = new
    else:
        program.constants[key] = new


def _set_attr(node: Any, field: str, value: Any) -> None:
    import torch

    schema = node.target._schema
    names = [a.name for a in schema.arguments]
    index = next((names.index(n) for n in ARGS.get(field, ()) if n in names), None)
    if index is None:
        raise _Skip(f"{node.target} has no argument for {field}")
    arg = schema.arguments[index]
    if field == "pads":
        top, left, bottom, right = (int(v) for v in value)
        if (top, left) != (bottom, right):
            raise _Skip(f"torch pads both sides alike; {list(value)} needs an explicit F.pad")
        value = [top, left]
    if field == "kernel" and _kind(node) == "conv2d":
        raise _Skip("a conv's kernel size is its weight's shape")
    if str(arg.type) == "str":  # aten.conv2d.padding ('same'/'valid'): use the list overload
        if "conv2d" not in str(node.target):
            raise _Skip(f"{node.target} takes {field} as a string")
        node.target = torch.ops.aten.conv2d.default
        schema = node.target._schema
    args = list(node.args)
    while len(args) <= index:  # fill the schema's defaults up to the edited argument
        default = schema.arguments[len(args)].default_value
        args.append(list(default) if isinstance(default, (list, tuple)) else default)
    if str(arg.type) == "bool":
        value = bool(value)
    elif str(arg.type) == "float":
        value = float(value)
    elif str(arg.type) == "int":
        value = int(value)
    elif isinstance(value, list):
        value = [int(v) for v in value]
    args[index] = value
    node.args = tuple(args)
    node.kwargs = {k: v for k, v in node.kwargs.items() if k != arg.name}


def _remove_node(program: Any, node: Any) -> None:
    source = node.args[0] if node.args else None
    inputs = [a for a in node.all_input_nodes if a.op != "placeholder" or a is source]
    if source is None or not hasattr(source, "meta") or inputs != [source]:
        raise _Skip(f"{node.name} is not a single-input op")
    if tuple(source.meta["val"].shape) != tuple(node.meta["val"].shape):
        raise _Skip(f"{node.name} changes its input's shape")
    node.replace_all_uses_with(source)
    program.graph.erase_node(node)


def _propagate_shapes(program: Any) -> None:
    """Record every node's output shape again after an argument changed (TVM's importer and
    torch.export.load read the recorded ones)."""
    from torch._guards import detect_fake_mode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    program.graph.lint()
    program.graph_module.recompile()
    placeholders = [n.meta["val"] for n in program.graph.nodes if n.op == "placeholder"]
    mode = detect_fake_mode(placeholders)
    FakeTensorProp(program.graph_module, mode).propagate_dont_convert_inputs(*placeholders)


__all__ = ["apply_task", "file_ops", "node_names", "read_tensor_task"]
