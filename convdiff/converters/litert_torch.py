"""torch -> tflite with litert-torch, Google's own route from PyTorch to LiteRT.

Why it is the default for this edge: it is one hop, where the other route goes torch -> onnx
-> keras -> tflite through onnx2keras, whose graphs TFLite refuses for the zoo models (MEAN
with int64 axes). That route stays reachable with ``--converter onnx2keras``.

Why an environment of its own (``convdiff/data/envs/litert-torch.txt``): litert-torch 0.10.0
needs litert-converter 0.5, which pins xdsl 0.28.0 and so typing-extensions<4.13, while
apache-tvm-ffi (convdiff's TVM) needs >=4.13. The environment has convdiff's own torch, so the
.pt2 files convdiff wrote load there as they load in convdiff's torch worker
(:func:`convdiff.frameworks.torch.load`, with its safety rules: no code from the file runs).

What the tool does, measured with litert-torch 0.10.0 and torch 2.14.1:

- ``litert_torch.convert(module, sample_args)`` re-exports the module with ``torch.export``
  and lowers it through JAX to a TFLite flatbuffer. An ExportedProgram's module refuses
  ``eval()`` ("Calling eval() is not supported yet"), although the program was exported in
  eval mode already; its ``training`` flags are cleared by hand so litert-torch does not warn
  that the model "is converted in training mode".
- The input keeps the source's layout: NCHW in, NCHW out (``to_channel_last_io`` would add
  transposes to take NHWC; convdiff feeds every model in its own layout, as tf2onnx's hop
  keeps NHWC). The runner reads NCHW from the input shape ``[1, 3, H, W]``.
- The batch is fixed: a dynamic batch (``dynamic_shapes``) fails in the JAX lowering of
  ``flatten`` ("Shapes must be 1D sequences of concrete values of integer type"), and every
  zoo classifier flattens. So the example has the source's own fixed batch, or 1, and the
  LiteRT runner feeds a batch-1 model one image at a time.
- A TorchScript (.pt) source cannot be re-exported by torch.export; that failure is the
  tool's crash, recorded as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.converters import converter
from convdiff.core.options import ConvertOptions

PACKAGES = ("litert-torch", "torch", "litert-converter", "ai-edge-litert")
EXAMPLE_BATCH = 1  # the batch of the TFLite model (a dynamic batch does not lower, see above)


@converter(
    "torch",
    "tflite",
    tool="litert-torch",
    worker="torch",
    packages=PACKAGES,
    name="litert-torch",
    env="litert-torch",
)
def torch_to_tflite(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    """Convert a .pt2 (or a pickled module convdiff may load) with ``litert_torch.convert``."""
    import litert_torch
    import torch

    from convdiff.frameworks import torch as torch_fw

    model = torch_fw.load(str(src))
    shape = torch_fw.example_shape(model, input_shape, "litert-torch", src.name)
    fixed = model.input_shape[0] if model.input_shape else None
    batch = fixed or EXAMPLE_BATCH
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(batch, *shape[1:], generator=generator),)
    edge_model = litert_torch.convert(_inference_mode(model.module), example)
    out = out_dir / "model.tflite"
    edge_model.export(str(out))
    print(f"[litert_torch] batch={batch} layout=NCHW -> {out}", flush=True)
    return out


def _inference_mode(module: Any) -> Any:
    """``module.eval()`` without the call an exported program's module refuses: the flags
    only, since such a module's graph already holds inference-mode ops."""
    for sub in module.modules():
        sub.training = False
    return module
