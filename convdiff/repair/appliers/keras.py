"""Patch applier for Keras models (.keras), and the layer names its edits use.

Child side: runs in a ``tf`` worker; the orchestrator reaches it through
:mod:`convdiff.repair.appliers.apply`, tensors travel as .npz files.

Layers are named as ``model.get_layer()`` takes them (the names
:func:`convdiff.ir.names.file_names` maps the float conversion's op names onto, with
:func:`layer_classes`). Tensors are Keras' own: Conv2D kernel HWIO, DepthwiseConv2D
``(H, W, in, multiplier)``, Dense ``[in, out]``, BatchNormalization gamma/beta for
weight/bias; :func:`read_tensor_task` returns them as stored, and the planner finds the
layout from them.

Attribute edits rebuild the model with ``keras.models.clone_model``, each edited layer from its
``get_config()`` with the new value (strides, padding ``same``/``valid`` where that is what the
pads are, dilation_rate, groups, pool_size, epsilon, ReLU max_value, activation, softmax axis,
use_bias for a bias the layer lacked), then copy every weight over. Removing a layer is not
written for Keras (a functional graph would need its wiring rebuilt).

Same edits, same bytes: Keras stamps the save time into ``metadata.json`` and the zip entry of
the weights; the written archive takes the target's own ``date_saved`` and a fixed zip date.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.core.trust import record_written

WEIGHT_ATTRS = {"weight": ("kernel", "depthwise_kernel", "gamma"), "bias": ("bias", "beta")}
CONFIG_KEYS = {  # patch field -> Keras config key (pads: padding, handled apart)
    "strides": "strides",
    "dilation": "dilation_rate",
    "groups": "groups",
    "epsilon": "epsilon",
    "clip_max": "max_value",
}
ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class _Skip(Exception):
    """An edit this model cannot take; the message is the reason reported."""


# -- worker tasks ----------------------------------------------------------------------------


def layer_classes(path: str) -> dict[str, str]:
    """The model's layer names (``model.layers`` order) and their class names."""
    model = _load(path)
    return {layer.name: type(layer).__name__ for layer in model.layers}


def read_tensor_task(path: str, layer: str, field: str, out_npz: str) -> bool:
    """Write the layer's weight/bias, exactly as Keras stores it, to ``out_npz`` (key ``x``);
    False when the layer has no such tensor."""
    model = _load(path)
    try:
        variable = _variable(_layer(model, layer), field)
    except _Skip:
        return False
    np.savez(out_npz, x=np.asarray(variable.numpy(), dtype=np.float32))
    return True


def apply_task(target: str, edits: list[dict[str, Any]], tensors_npz: str, out: str) -> dict:
    """Apply ``edits`` (Edit JSON) to ``target`` and save the model to ``out`` (.keras).
    Returns the indices of the applied edits and ``[index, reason]`` of the refused ones."""
    model = _load(target)
    tensors: dict[str, np.ndarray] = {}
    if tensors_npz and Path(tensors_npz).exists():
        with np.load(tensors_npz, allow_pickle=False) as data:
            tensors = {k: data[k] for k in data.files}
    refused: dict[int, str] = {}
    changes: dict[str, dict[str, Any]] = {}  # layer -> config changes
    # pads last: whether 'same' gives them depends on the strides the patch sets
    order = sorted(range(len(edits)), key=lambda i: edits[i].get("field") == "pads")
    for i in order:
        edit = edits[i]
        try:
            layer = _layer(model, edit["layer"])
            if edit["action"] == "set_attr":
                change = _config_change(layer, edit, changes.get(layer.name, {}))
                changes.setdefault(layer.name, {}).update(change)
            elif edit["action"] == "set_tensor":
                if edit["value"] not in tensors:
                    raise _Skip(f"the patch holds no tensor {edit['value']!r}")
                if edit["field"] == "bias" and getattr(layer, "use_bias", True) is False:
                    changes.setdefault(layer.name, {})["use_bias"] = True
            elif edit["action"] == "remove_node":
                raise _Skip("removing a layer is not written for Keras models")
            else:
                raise _Skip(f"the Keras applier does not do {edit['action']!r}")
        except _Skip as skip:
            refused[i] = str(skip)
    if changes:
        model = _rebuild(model, changes)
    for i, edit in enumerate(edits):
        if i in refused or edit["action"] != "set_tensor":
            continue
        try:
            _set_tensor(model.get_layer(edit["layer"]), edit["field"], tensors[edit["value"]])
        except _Skip as skip:
            refused[i] = str(skip)
    _save(model, Path(out), Path(target))
    record_written(out)  # convdiff's own output (core.trust)
    return {
        "applied": [i for i in range(len(edits)) if i not in refused],
        "refused": [[i, reason] for i, reason in sorted(refused.items())],
    }


# -- lookups ---------------------------------------------------------------------------------


def _load(path: str) -> Any:
    """As convdiff loads Keras models everywhere: onnx2keras writes Lambda layers, which
    Keras' safe mode refuses (see :mod:`convdiff.frameworks.keras`)."""
    from convdiff.frameworks.keras import load

    return load(path)


def _layer(model: Any, name: str) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        raise _Skip(f"no layer named {name!r} in the model") from None


def _variable(layer: Any, field: str) -> Any:
    for attr in WEIGHT_ATTRS.get(field, ()):
        variable = getattr(layer, attr, None)
        if variable is not None and hasattr(variable, "assign"):
            return variable
    raise _Skip(f"{layer.name} ({type(layer).__name__}) has no {field}")


# -- edits -----------------------------------------------------------------------------------


def _set_tensor(layer: Any, field: str, value: np.ndarray) -> None:
    variable = _variable(layer, field)
    if tuple(variable.shape) != tuple(value.shape):
        raise _Skip(
            f"{layer.name}.{field} has shape {list(variable.shape)}, the patch "
            f"{list(value.shape)}: a shape change would change the layer's units"
        )
    variable.assign(np.asarray(value).astype(variable.dtype))


def _config_change(layer: Any, edit: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    """The ``get_config()`` entries that express one ``set_attr`` edit (``pending``: the
    layer's changes so far)."""
    config, field, value = {**layer.get_config(), **pending}, edit["field"], edit["value"]
    kind = type(layer).__name__
    if field == "pads":
        return {"padding": _padding(layer, config, [int(v) for v in value])}
    if field == "kernel" and "pool_size" in config:
        return {"pool_size": tuple(int(v) for v in value)}
    if field == "activation":
        if "activation" not in config or value not in ACTIVATIONS:
            raise _Skip(f"{layer.name} ({kind}) cannot take activation {value!r}")
        return {"activation": ACTIVATIONS[value]}
    if field == "clip_min" and kind == "ReLU" and float(value) == 0.0:
        return {}
    if field == "axis" and "axis" in config:
        rank = len(layer.output.shape)
        axis = int(value) % rank
        nhwc = {1: rank - 1, **{a: a - 1 for a in range(2, rank)}} if rank > 2 else {}
        return {"axis": nhwc.get(axis, axis)}
    key = CONFIG_KEYS.get(field)
    if key is None or key not in config:
        raise _Skip(f"{layer.name} ({kind}) has no setting for {field}")
    if isinstance(value, list):
        return {key: tuple(int(v) for v in value)}
    return {key: float(value) if isinstance(config[key], float) else value}


def _padding(layer: Any, config: dict[str, Any], pads: list[int]) -> str:
    """'valid' or 'same' when one of them gives ``pads`` ([top, left, bottom, right])."""
    if not any(pads):
        return "valid"
    kernel = config.get("kernel_size") or config.get("pool_size")
    strides = config.get("strides") or kernel
    dilation = config.get("dilation_rate") or (1, 1)
    if kernel is None or config.get("data_format", "channels_last") != "channels_last":
        raise _Skip(f"{layer.name} takes no pads Keras can express")
    size = list(layer.input.shape[1:3])
    same = []
    for axis in range(2):
        k = (int(kernel[axis]) - 1) * int(dilation[axis]) + 1
        s, n = int(strides[axis]), size[axis]
        if n is None and s != 1:
            raise _Skip(f"{layer.name}: 'same' pads depend on the unknown input size")
        total = k - 1 if s == 1 else max((-(-n // s) - 1) * s + k - n, 0)
        same.append((total // 2, total - total // 2))
    if pads == [same[0][0], same[1][0], same[0][1], same[1][1]]:
        return "same"
    raise _Skip(f"pads {pads} are neither 'same' nor 'valid' (Keras needs a ZeroPadding2D)")


def _rebuild(model: Any, changes: dict[str, dict[str, Any]]) -> Any:
    """The model rebuilt with ``changes`` in its layers' configs, every weight copied over."""
    import keras

    def clone(layer: Any) -> Any:
        config = {**layer.get_config(), **changes.get(layer.name, {})}
        return type(layer).from_config(config)

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    for layer in rebuilt.layers:
        old = model.get_layer(layer.name).weights
        new = layer.weights
        by_path = {w.path.rpartition("/")[2]: w for w in old}
        for variable in new:
            source = by_path.get(variable.path.rpartition("/")[2])
            if source is not None and tuple(source.shape) == tuple(variable.shape):
                variable.assign(source.numpy())
    return rebuilt


# -- writing ---------------------------------------------------------------------------------


def _save(model: Any, out: Path, target: Path) -> None:
    """Save as .keras with the target's ``date_saved`` and a fixed zip date (module doc)."""
    from convdiff.frameworks.keras import make_lambdas_serializable

    with tempfile.TemporaryDirectory(prefix="convdiff-keras-") as tmp:
        saved = Path(tmp) / "model.keras"
        make_lambdas_serializable(model)
        model.save(saved)
        stamp = _date_saved(target)
        buffer = io.BytesIO()
        with zipfile.ZipFile(saved) as src, zipfile.ZipFile(buffer, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "metadata.json" and stamp is not None:
                    meta = json.loads(data)
                    meta["date_saved"] = stamp
                    data = json.dumps(meta).encode()
                entry = zipfile.ZipInfo(info.filename, ZIP_DATE)
                entry.compress_type, entry.external_attr = info.compress_type, info.external_attr
                dst.writestr(entry, data)
    out.write_bytes(buffer.getvalue())


def _date_saved(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("date_saved")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


# -- names ---------------------------------------------------------------------------------


__all__ = ["apply_task", "layer_classes", "read_tensor_task"]
