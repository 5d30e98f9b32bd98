"""onnx -> torch with onnx2torch, saved as a torch.export program (.pt2) when it exports.

onnx2torch builds an ``fx.GraphModule`` from the ONNX graph op by op; an op version it does
not know raises ``NotImplementedError`` -- ReduceMean-18, AveragePool-19, Constant-19, Pad-18:
exports at opset 18 and above often contain one (opset 17 exports read fine). That exception
is the tool's verdict and propagates to the worker, which records it. Some onnx2torch modules
do not pass torch.export (EfficientNet-Lite0's: ``torch.Size() takes an iterable of 'int'``);
:func:`convdiff.frameworks.torch.save` then writes TorchScript.

The module keeps the ONNX model's layout: a graph that takes NHWC (tf2onnx from Keras) gives
a torch module that takes NHWC.
"""

from __future__ import annotations

from pathlib import Path

from convdiff.converters import converter
from convdiff.core.options import ConvertOptions


@converter(
    "onnx",
    "torch",
    tool="onnx2torch",
    worker="torch",
    packages=("onnx2torch", "torch", "onnx"),
    name="onnx2torch",
)
def onnx_to_torch(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    """Convert with ``onnx2torch.convert`` and save with :func:`convdiff.frameworks.torch.save`."""
    from onnx2torch import convert

    from convdiff.frameworks import torch as torch_fw

    module = convert(str(src))
    shape = input_shape or onnx_input_shape(src)
    if not shape or any(d is None for d in shape[1:]):
        raise ValueError(f"the input shape of {src.name} is not fully known ({shape})")
    saved = torch_fw.save(module, str(out_dir / "model.pt2"), shape)
    print(f"[onnx2torch] saved {saved}", flush=True)
    return Path(saved["path"])


def onnx_input_shape(path: Path) -> list[int | None] | None:
    """First graph input's shape, symbolic or unknown dimensions as None."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in initializers:  # old exports list weights as inputs too
            continue
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return None
