"""Child-side helpers for the Keras and torch repair tests: faults edited into a copy of a tiny
model, and a model's weights dumped to .npz so the test process can compare them.

Keras functions run in a ``tf`` worker, torch functions in a ``torch`` worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

KERAS_FAULTS = ("conv_scaled", "dense_bias_zeroed", "conv_strides")
TORCH_FAULTS = ("conv1_scaled", "fc_bias_zeroed", "conv2_padding")


# -- Keras (tests.tiny.keras_models.build_tiny_cnn: conv, bn, relu, gap, dense, softmax) ------


def keras_fault(source: str, out: str, fault: str) -> str:
    """A copy of ``source`` with ``fault``: the conv kernel doubled, the dense bias zeroed, or
    the conv's strides 2 (its weights kept)."""
    import keras

    model = keras.saving.load_model(source, compile=False)
    if fault == "conv_scaled":
        conv = model.get_layer("conv")
        conv.kernel.assign(conv.kernel.numpy() * 2.0)
    elif fault == "dense_bias_zeroed":
        dense = model.get_layer("dense")
        dense.bias.assign(np.zeros(dense.bias.shape, np.float32))
    elif fault == "conv_strides":

        def clone(layer: Any) -> Any:
            config = layer.get_config()
            if layer.name == "conv":
                config["strides"] = (2, 2)
            return type(layer).from_config(config)

        faulty = keras.models.clone_model(model, clone_function=clone)
        faulty.set_weights(model.get_weights())
        model = faulty
    else:
        raise ValueError(f"unknown fault {fault!r}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


def keras_weights(path: str, out_npz: str) -> dict[str, Any]:
    """Every layer's weights (``<layer>/<i>``) to ``out_npz``; returns each layer's config
    entries the tests check (strides, padding)."""
    import keras

    model = keras.saving.load_model(path, compile=False)
    layers = model.layers
    arrays = {f"{y.name}/{i}": w for y in layers for i, w in enumerate(y.get_weights())}
    np.savez(out_npz, **arrays)
    configs = {y.name: y.get_config() for y in layers}
    return {
        name: {k: config[k] for k in ("strides", "padding") if k in config}
        for name, config in configs.items()
    }


# -- torch -----------------------------------------------------------------------------------

INPUT_SHAPE = [None, 3, 16, 16]


def tiny_named(conv2_padding: int = 1, seed: int = 0) -> Any:
    """conv1 -> bn1 -> relu -> pool -> conv2 -> relu -> gap -> fc, seeded, with named modules
    (so the layers are called conv1, bn1, ... in the program)."""
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=conv2_padding)
            self.relu2 = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.relu(self.bn1(self.conv1(x))))
            x = self.gap(self.relu2(self.conv2(x)))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.uniform_(-0.2, 0.2)
        model.fc.weight.mul_(4.0)  # a wide logit range: differences show in the labels
    return model.eval()


def torch_source(out: str) -> str:
    from convdiff.frameworks import torch as torch_fw

    return torch_fw.save(tiny_named(), out, INPUT_SHAPE)["path"]


def torch_fault(source: str, out: str, fault: str) -> str:
    """A copy of ``source`` with ``fault``: conv1's weight doubled or fc's bias zeroed in the
    program's state dict, or the model exported again with conv2 unpadded (same weights)."""
    import torch

    from convdiff.frameworks import torch as torch_fw

    if fault == "conv2_padding":
        return torch_fw.save(tiny_named(conv2_padding=0), out, INPUT_SHAPE)["path"]
    program = torch.export.load(source)
    key, change = {
        "conv1_scaled": ("conv1.weight", lambda t: t * 2.0),
        "fc_bias_zeroed": ("fc.bias", torch.zeros_like),
    }[fault]
    with torch.no_grad():
        program.state_dict[key] = torch.nn.Parameter(change(program.state_dict[key]))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out)
    return out


def torch_weights(path: str, out_npz: str) -> dict[str, Any]:
    """The program's state dict to ``out_npz``; returns each conv and pool node's stride and
    padding arguments (by graph node name)."""
    import torch

    program = torch.export.load(path)
    np.savez(out_npz, **{k: v.detach().numpy() for k, v in program.state_dict.items()})
    args = {}
    for node in program.graph.nodes:
        if node.op == "call_function" and "conv2d" in str(node.target):
            args[node.name] = [list(a) for a in node.args[3:5]]
    return args
