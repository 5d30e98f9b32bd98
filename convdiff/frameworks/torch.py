"""PyTorch models: torch.export programs (.pt2) first, TorchScript (.pt) as the fallback.

Runs only inside a worker of kind ``torch``; torch is imported inside the functions.

Why .pt2 first: an ExportedProgram records its input and output shapes (with a symbolic batch
dimension when exported as dynamic), keeps eval-mode BatchNorm as an explicit op, and is what
TVM's ``relax.frontend.torch.from_exported_program`` and the dynamo ONNX exporter read. Some
modules do not export (data-dependent control flow, ops torch.export refuses); for those
:func:`save` traces TorchScript instead and records the example shape inside the file
(``_extra_files``), because a loaded TorchScript module does not know its input shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.core.errors import ConvdiffError
from convdiff.core.trust import may_run_code, refuse

SHAPE_RECORD = "convdiff.json"  # extra file inside our TorchScript archives: the example shape
EXAMPLE_BATCH = 2  # torch.export specializes a dimension whose example size is 0 or 1


@dataclass
class TorchModel:
    """A loaded model and what is known about its boundary.

    ``module`` is callable on a tensor: the ExportedProgram's ``module()``, a ScriptModule or
    an ``nn.Module``. ``program`` keeps the ExportedProgram for tools that need it (the dynamo
    ONNX exporter, TVM). A ``None`` in a shape is a dynamic or unknown dimension.
    """

    module: Any
    format: str  # "torch.export" | "torchscript" | "pickle"
    input_shape: list[int | None] | None
    output_shape: list[int | None] | None
    input_name: str
    program: Any = None
    notes: list[str] = field(default_factory=list)


def load(path: str) -> TorchModel:
    """Load ``.pt2`` with torch.export; ``.pt``/``.pth`` as TorchScript, else as a pickled module.

    A file that holds a state_dict is refused: weights alone have no architecture; a zoo
    name with ``--weights PATH`` is how to use one.
    """
    import torch

    p = Path(path)
    if p.suffix == ".pt2":
        return _from_program(load_program(str(p)))
    try:
        extra = {SHAPE_RECORD: ""}
        script = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception:  # not a TorchScript archive: maybe a module saved with torch.save
        return _from_pickle(p)
    script.eval()
    record = json.loads(extra[SHAPE_RECORD]) if extra[SHAPE_RECORD] else {}
    shape = record.get("input_shape") or _script_input_shape(script)
    inputs = list(script.graph.inputs())
    name = inputs[1].debugName().split(".")[0] if len(inputs) > 1 else "input"
    model = TorchModel(script, "torchscript", shape, None, name)
    model.output_shape = _probe_output_shape(model)
    if shape is None:
        model.notes.append("TorchScript file records no input shape")
    return model


def describe(model: TorchModel) -> dict[str, Any]:
    """Input/output shapes (None = dynamic or unknown), dtype and input name.

    For TorchScript archives not written by :func:`save` the input shape is usually unknown
    (TorchScript keeps no example input): ``input_shape`` is then None and the caller must
    take the shape from the preprocessing spec.
    """
    return {
        "input_shape": model.input_shape,
        "input_dtype": "float32",
        "output_shape": model.output_shape,
        "input_name": model.input_name,
        "format": model.format,
        "notes": list(model.notes),
    }


def predict(model: TorchModel, batch: np.ndarray) -> np.ndarray:
    """Run on CPU under inference_mode; a model exported with a fixed batch runs in chunks."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    fixed = model.input_shape[0] if model.input_shape else None
    with torch.inference_mode():
        if not fixed or fixed == len(x):
            return _first_tensor(model.module(x)).numpy()
        outputs = []
        for start in range(0, len(x), fixed):
            chunk = x[start : start + fixed]
            real = len(chunk)
            if real < fixed:  # pad the last chunk; the padding rows are dropped below
                pad = torch.zeros((fixed - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = torch.cat([chunk, pad])
            outputs.append(_first_tensor(model.module(chunk))[:real])
        return torch.cat(outputs).numpy()


def example_shape(
    model: TorchModel, input_shape: list[int | None] | None, tool: str, name: str
) -> list[int | None]:
    """The input shape a tool that traces the model needs (the run's, else the file's own),
    or the user's error: an exporter cannot make an example input of an unknown size."""
    shape = input_shape or model.input_shape
    if not shape or any(d is None for d in shape[1:]):
        raise ValueError(
            f"{tool} needs an example input and the shape of {name} is unknown "
            f"({shape}); give the input size (--input-size)"
        )
    return list(shape)


def save(module: Any, path: str, example_input_shape: list[int | None]) -> dict[str, Any]:
    """Write ``module`` as .pt2 (torch.export), or as TorchScript .pt when export fails.

    Tried in order: export with a dynamic batch dimension, export with a fixed batch of 1,
    ``torch.jit.trace``. Returns ``{"path", "format", "dynamic_batch", "fallback_reason"}``
    so the caller can say which one it got and why.
    """
    import torch

    module.eval()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    dims = [d if d else 1 for d in example_input_shape[1:]]
    failures: list[str] = []
    attempts = ((EXAMPLE_BATCH, True), (1, False))
    for batch, dynamic in attempts:
        example = (torch.randn(batch, *dims, generator=torch.Generator().manual_seed(0)),)
        shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
        try:
            program = torch.export.export(module, example, dynamic_shapes=shapes)
        except Exception as exc:  # every export failure is a reason to try the next way
            failures.append(
                f"torch.export ({'dynamic' if dynamic else 'fixed'} batch): "
                f"{type(exc).__name__}: {_first_line(exc)}"
            )
            continue
        out = target.with_suffix(".pt2")
        torch.export.save(program, str(out))
        return {
            "path": str(out),
            "format": "torch.export",
            "dynamic_batch": dynamic,
            "fallback_reason": "; ".join(failures),
        }
    example = torch.randn(1, *dims, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    out = target.with_suffix(".pt")
    # A trace may have baked the example's batch size into a reshape; recording a fixed batch
    # of 1 makes predict() feed one image at a time, which is right either way.
    record = json.dumps({"input_shape": [1, *dims]})
    torch.jit.save(traced, str(out), _extra_files={SHAPE_RECORD: record})
    return {
        "path": str(out),
        "format": "torchscript",
        "dynamic_batch": False,
        "fallback_reason": "; ".join(failures),
    }


def file_weights(path: str, out_npz: str) -> list[str]:
    """Task: the float parameter and buffer tensors of a model file, in the program's order
    (state dict, then constants; a TorchScript or pickled module's state dict), to ``out_npz``
    keyed by name; returns the names in order. For the weights stage when TVM cannot import a
    model (:mod:`convdiff.ir.file_weights`); the file loads as :func:`load` loads it."""
    model = load(path)
    if model.program is not None:
        items = {**model.program.state_dict, **model.program.constants}
    else:
        items = dict(model.module.state_dict())
    arrays = {}
    for name, value in items.items():
        tensor = getattr(value, "detach", None)
        if tensor is None or not value.is_floating_point():
            continue  # a custom object, or an integer buffer (BatchNorm's step count)
        arrays[name] = tensor().float().cpu().numpy()
    np.savez(out_npz, **arrays)
    return list(arrays)


# -- internals -----------------------------------------------------------------------------


def _from_program(program: Any) -> TorchModel:
    """Read the boundary from the program's signature and its placeholders' fake tensors."""
    signature = program.graph_signature
    user_inputs = list(signature.user_inputs)
    input_shape: list[int | None] | None = None
    output_shape: list[int | None] | None = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and user_inputs and node.name == user_inputs[0]:
            input_shape = _static_dims(node.meta.get("val"))
        elif node.op == "output":
            outputs = node.args[0]
            first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
            output_shape = _static_dims(getattr(first, "meta", {}).get("val"))
    name = user_inputs[0] if user_inputs else "input"
    return TorchModel(program.module(), "torch.export", input_shape, output_shape, name, program)


def load_program(path: str) -> Any:
    """``torch.export.load``, safe by default (:mod:`convdiff.core.trust`).

    A .pt2 archive stores plain tensors as raw bytes, but custom objects and tensor subclasses
    as pickles, and torch unpickles those (and a legacy archive's weights, on a fallback) with
    ``weights_only=False``: code from the file would run. Unless the file may run code, every
    unpickling inside the load is held to ``weights_only=True``, and a payload that needs more
    is refused."""
    import pickle

    import torch

    if may_run_code(path):
        return torch.export.load(path)
    original = torch.load

    def weights_only(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return original(*args, **kwargs)
        except pickle.UnpicklingError:
            raise refuse(path, "pickled Python objects among its weights") from None

    torch.load = weights_only
    try:
        return torch.export.load(path)
    finally:
        torch.load = original


def _from_pickle(path: Path) -> TorchModel:
    """A whole module pickled with ``torch.save(model)``; unpickling runs the file's code, so
    only a file that may run code (:mod:`convdiff.core.trust`) is unpickled in full."""
    import pickle

    import torch

    if may_run_code(path):
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise refuse(path, "a pickled Python module") from None
    if not isinstance(obj, torch.nn.Module):
        raise ConvdiffError(
            f"{path.name} holds {type(obj).__name__}, not a model "
            "(a state_dict has no architecture)",
            "export the model with torch.export (.pt2), or give a zoo name with --weights PATH",
        )
    obj.eval()
    return TorchModel(
        obj, "pickle", None, None, "input", notes=["pickled nn.Module: shape unknown"]
    )


def _static_dims(value: Any) -> list[int | None] | None:
    """Shape of a fake tensor with symbolic sizes (SymInt) turned into None."""
    if value is None or not hasattr(value, "shape"):
        return None
    return [d if isinstance(d, int) else None for d in value.shape]


def _script_input_shape(script: Any) -> list[int | None] | None:
    """The traced input type's sizes, when the archive kept them (rarely, after save/load)."""
    inputs = list(script.graph.inputs())
    if len(inputs) < 2:
        return None
    try:
        sizes = inputs[1].type().sizes()
    except RuntimeError:
        return None
    return [None, *sizes[1:]] if sizes else None


def _probe_output_shape(model: TorchModel) -> list[int | None] | None:
    """Run one zero image through a module whose input shape is known, to learn the output."""
    import torch

    if not model.input_shape or any(d is None for d in model.input_shape[1:]):
        return None
    with torch.inference_mode():
        y = _first_tensor(model.module(torch.zeros(1, *model.input_shape[1:])))
    return [model.input_shape[0], *y.shape[1:]]


def _first_tensor(output: Any) -> Any:
    """Classifiers return a tensor; some return tuples, lists or dicts: take the first."""
    if isinstance(output, dict):
        output = next(iter(output.values()))
    while isinstance(output, (list, tuple)):
        output = output[0]
    return output.detach().float().cpu()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
