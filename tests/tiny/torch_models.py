"""Child-side builders of tiny torch models (run in a ``torch`` worker, never in pytest).

The model is conv -> batchnorm -> relu -> pool -> linear on 3x16x16 images, seeded, with
BatchNorm statistics set away from (0, 1) so that an exporter that drops or mangles the
BatchNorm changes the outputs visibly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUT_SHAPE = [None, 3, 16, 16]
NUM_CLASSES = 5


def tiny_module(seed: int = 0, view: bool = False) -> Any:
    """The eager module itself (for child-side helpers only).

    ``view=True`` flattens with ``x.view(x.size(0), -1)``, as EfficientNet does: the same
    numbers, but a graph whose reshape depends on the batch size.
    """
    import torch
    from torch import nn

    class ViewFlatten(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(x.size(0), -1)

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        ViewFlatten() if view else nn.Flatten(),
        nn.Linear(8, NUM_CLASSES),
    )
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def make_tiny(out_dir: str, seed: int = 0, fmt: str = "pt2", view: bool = False) -> dict[str, Any]:
    """Save the tiny model as .pt2 (via frameworks.torch.save) or as TorchScript .pt."""
    import torch

    from convdiff.frameworks import torch as torch_fw

    module = tiny_module(seed, view)
    stem = "tiny-view" if view else "tiny"
    if fmt == "pt2":
        return torch_fw.save(module, str(Path(out_dir) / f"{stem}.pt2"), INPUT_SHAPE)
    path = Path(out_dir) / f"{stem}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(module, torch.zeros(1, *INPUT_SHAPE[1:]))
    torch.jit.save(traced, str(path))  # no shape record: a foreign TorchScript file
    return {"path": str(path), "format": "torchscript"}


def eager_outputs(inputs: str, outputs: str, seed: int = 0) -> list[int]:
    """Outputs of the eager module on the NHWC tensor ``x`` of ``inputs`` (saved as ``y``)."""
    import torch

    with np.load(inputs) as data:
        x = torch.from_numpy(data["x"].transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        y = tiny_module(seed)(x).numpy()
    np.savez(outputs, y=y)
    return list(y.shape)


def unexportable_module() -> Any:
    """A module torch.export refuses (data-dependent Python control flow), for the fallback."""
    import torch
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            if float(y.mean()) > 1e9:  # never true; still a graph break for torch.export
                return -y
            return y.flatten(1)

    return Branchy().eval()


def save_unexportable(out_dir: str) -> dict[str, Any]:
    from convdiff.frameworks import torch as torch_fw

    return torch_fw.save(unexportable_module(), str(Path(out_dir) / "branchy.pt2"), INPUT_SHAPE)


def fixed_batch_module() -> Any:
    """The tiny model behind a batch-size check: only a fixed batch of 1 exports."""
    import torch
    from torch import nn

    class OneAtATime(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_module(0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] != 1:
                raise ValueError("one image at a time")
            return self.inner(x)

    return OneAtATime().eval()


def save_fixed_batch(out_dir: str) -> dict[str, Any]:
    from convdiff.frameworks import torch as torch_fw

    return torch_fw.save(fixed_batch_module(), str(Path(out_dir) / "fixed.pt2"), INPUT_SHAPE)


def save_state_dict(out_dir: str) -> str:
    """Weights only, as people often ship them: not loadable without the architecture."""
    import torch

    path = Path(out_dir) / "tiny.pth"
    torch.save(tiny_module(0).state_dict(), str(path))
    return str(path)


def split_module(seed: int = 0) -> Any:
    """A conv whose 12 channels are split in three (torch ``split``: TVM's tuple-valued
    ``relax.split``) and recombined as ``a * sigmoid(b) + c^T`` (c's H and W swapped, as
    attention transposes k), then pooled into 5 classes: the shape of timm LeViT's and
    EfficientViT's q, k, v."""
    import torch
    from torch import nn

    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 12, 3, padding=1)
            self.fc = nn.Linear(4, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b, c = self.conv(x).split([4, 4, 4], dim=1)
            y = a * torch.sigmoid(b) + c.permute(0, 1, 3, 2)
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(seed)
    return Split().eval()


def save_split(out_dir: str) -> dict[str, Any]:
    from convdiff.frameworks import torch as torch_fw

    return torch_fw.save(split_module(), str(Path(out_dir) / "split.pt2"), INPUT_SHAPE)


def module_outputs(builder: str, inputs: str, outputs: str) -> list[int]:
    """Outputs of the eager module this file's function ``builder`` (e.g. ``split_module``)
    builds, on the NHWC ``x`` of ``inputs`` (saved as ``y``)."""
    import torch

    with np.load(inputs) as data:
        x = torch.from_numpy(data["x"].transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        y = globals()[builder]()(x).numpy()
    np.savez(outputs, y=y)
    return list(y.shape)


def save_scripted(out_dir: str) -> str:
    """The tiny module through ``torch.jit.script``, with the input-shape record convdiff's own
    TorchScript files carry (:data:`convdiff.frameworks.torch.SHAPE_RECORD`)."""
    import json

    import torch

    from convdiff.frameworks.torch import SHAPE_RECORD

    path = Path(out_dir) / "scripted.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"input_shape": INPUT_SHAPE})
    torch.jit.save(torch.jit.script(tiny_module()), str(path), _extra_files={SHAPE_RECORD: record})
    return str(path)


def onnx_to_torchscript(onnx_path: str, out_dir: str) -> str:
    """onnx2torch's module of ``onnx_path`` saved as convdiff saves a module torch.export
    refuses (:func:`convdiff.frameworks.torch.save`'s fallback): traced at batch 1, the shape
    recorded."""
    import json

    import onnx
    import torch
    from onnx2torch import convert

    from convdiff.frameworks.torch import SHAPE_RECORD

    proto = onnx.load(onnx_path)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    module = convert(proto).eval()
    path = Path(out_dir) / "onnx2torch.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.zeros(1, *dims[1:]), check_trace=False)
    record = json.dumps({"input_shape": [1, *dims[1:]]})
    torch.jit.save(traced, str(path), _extra_files={SHAPE_RECORD: record})
    return str(path)


def inplace_view_module(seed: int = 0) -> Any:
    """timm GhostNet's pattern: a conv output sliced to all its channels (``out[:, :8]``, a
    view spanning the tensor) and a shortcut added in place (``+=``), which torch.export
    functionalizes into ``slice_scatter`` over the whole (symbolic) batch axis."""
    import torch
    from torch import nn

    class InplaceView(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.skip = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(8, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)[:, :8]
            y += self.skip(x)
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(seed)
    return InplaceView().eval()


def save_inplace_view(out_dir: str) -> dict[str, Any]:
    from convdiff.frameworks import torch as torch_fw

    path = str(Path(out_dir) / "inplace.pt2")
    return torch_fw.save(inplace_view_module(), path, INPUT_SHAPE)


def floor_div_module(seed: int = 0) -> Any:
    """A float tensor floor-divided by a Python int (``torch.div(t, 2, rounding_mode=
    "floor")``, as timm EdgeNeXt's Fourier position encoding does), between a conv and a
    pooled classifier."""
    import torch
    from torch import nn

    class FloorDiv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.div(self.conv(x) * 8.0, 2, rounding_mode="floor")
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(seed)
    return FloorDiv().eval()


def save_floor_div(out_dir: str) -> dict[str, Any]:
    from convdiff.frameworks import torch as torch_fw

    path = str(Path(out_dir) / "floor_div.pt2")
    return torch_fw.save(floor_div_module(), path, INPUT_SHAPE)
