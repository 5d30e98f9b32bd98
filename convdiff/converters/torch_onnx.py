"""torch -> onnx with ``torch.onnx.export``: the dynamo exporter or the legacy TorchScript one.

The two exporters are different tools that share one entry point: ``dynamo=True`` translates
a torch.export program with onnxscript, ``dynamo=False`` traces TorchScript. Which one ran,
and the opset the file ended up with, are written into the output's name
(``model-dynamo-opset20.onnx``) so a run folder says it without opening the file.

Opset: ``opts.opset=None`` keeps the exporter's own default (20 for both exporters in
torch 2.14) because convdiff measures the tools as people use them, and the file says what
it got. Measured here: the dynamo exporter cannot go below 18 (asked for 17 it writes 18,
with only a log warning), and onnx2torch 1.5.15 reads neither its ReduceMean-18 /
AveragePool-19 nor the legacy exporter's opset-20 Constant-19. With
``--torch-exporter torchscript --opset 17`` all four zoo models go torch -> onnx -> torch.
An onnx2torch failure on a default export is recorded as that tool's crash, not avoided.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.converters import converter
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import ConvertOptions

EXAMPLE_BATCH = 2  # an example batch of 1 makes torch.export specialize the batch dimension


@converter(
    "torch",
    "onnx",
    tool="torch.onnx.export",
    worker="torch",
    packages=("torch", "onnxscript", "onnx"),
    options=("opset", "torch_exporter"),
    name="torch-onnx",
)
def torch_to_onnx(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    """Export a .pt2/.pt model to ONNX with the exporter ``opts.torch_exporter`` names."""
    import onnx
    import torch

    from convdiff.frameworks import torch as torch_fw

    model = torch_fw.load(str(src))
    shape = torch_fw.example_shape(model, input_shape, "torch.onnx.export", src.name)
    fixed_batch = model.input_shape[0] if model.input_shape else None
    if opts.torch_exporter == "torchscript" and model.program is not None:
        # Tracing an exported program's module turns its symbolic batch size into a Python
        # int: `x.view(x.size(0), -1)` becomes Reshape [2, -1]. Declaring the batch dynamic
        # would then give a file that fails (or silently mixes images) at any other batch
        # size, so the legacy exporter gets a fixed batch of 1 from a .pt2.
        fixed_batch = 1
    batch = fixed_batch or EXAMPLE_BATCH
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(batch, *shape[1:], generator=generator),)
    tmp = out_dir / "model.onnx"
    if opts.torch_exporter == "dynamo":
        _export_dynamo(model, example, tmp, opts.opset, dynamic=fixed_batch is None)
    elif opts.torch_exporter == "torchscript":
        _export_torchscript(model, example, tmp, opts.opset, dynamic=fixed_batch is None)
    else:
        raise ValueError(f"unknown torch exporter {opts.torch_exporter!r}")
    opset = onnx_opset(tmp)
    out = out_dir / f"model-{opts.torch_exporter}-opset{opset}.onnx"
    tmp.replace(out)
    print(f"[torch_onnx] exporter={opts.torch_exporter} opset={opset} -> {out}", flush=True)
    if opts.opset is not None and opset != opts.opset:
        # the dynamo exporter builds opset >= 18 and keeps it when down-conversion fails: a
        # report that says the asked opset would then describe another file
        raise ConvdiffError(
            f"torch.onnx's {opts.torch_exporter} exporter wrote opset {opset}, not the "
            f"--opset {opts.opset} asked for",
            f"pass --opset {opset}, or leave --opset out",
        )
    onnx.checker.check_model(str(out))
    return out


def onnx_opset(path: Path) -> int:
    """The default-domain opset of an ONNX file (needs only the onnx protobuf library)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _export_dynamo(
    model: Any, example: tuple[Any, ...], out: Path, opset: int | None, *, dynamic: bool
) -> None:
    """The dynamo exporter; it reuses a .pt2's own ExportedProgram (its batch is already set)."""
    import torch

    common = {"dynamo": True, "opset_version": opset, "external_data": False}
    if model.program is not None:
        torch.onnx.export(model.program, example, str(out), **common)
        return
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.onnx.export(model.module, example, str(out), dynamic_shapes=shapes, **common)


def _export_torchscript(
    model: Any, example: tuple[Any, ...], out: Path, opset: int | None, *, dynamic: bool
) -> None:
    """The legacy exporter traces an nn.Module; a .pt2 is wrapped, since it cannot train().

    From a TorchScript (.pt) source the batch stays dynamic: the archive's graph keeps
    ``aten::size`` calls, which the exporter turns into Shape ops.
    """
    import torch

    module = model.module
    if model.program is not None:
        module = _Frozen.wrap(module)
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    torch.onnx.export(
        module,
        example,
        str(out),
        dynamo=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes=axes,
    )


class _Frozen:
    """Builds an nn.Module around an exported program's module whose ``train()`` is a no-op.

    The legacy exporter switches the model to eval mode with ``train(False)``, which an
    exported GraphModule refuses ("Calling train() is not supported yet"). The program was
    exported in eval mode already, so skipping the switch changes nothing.
    """

    @staticmethod
    def wrap(graph_module: Any) -> Any:
        import torch

        class Frozen(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = graph_module

            def train(self, mode: bool = True) -> Frozen:
                return self

            def forward(self, x: torch.Tensor) -> Any:
                return self.inner(x)

        return Frozen()
