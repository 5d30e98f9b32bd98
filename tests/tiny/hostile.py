"""Model files that run code when they load (child side: a tf or torch worker builds them).

Each one's payload creates the file ``marker`` when it runs, so a test can tell whether
loading the model executed it. None of them is written through convdiff's tasks: to convdiff
they are files from somewhere else."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the simplest code a pickle can smuggle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def lambda_keras(path: str, marker: str) -> str:
    """A .keras classifier whose Lambda layer writes ``marker`` whenever it runs (Keras runs
    it while it loads the file, to build the model)."""
    import keras

    def touch(x, marker=marker):
        open(marker, "w").close()
        return x

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(touch)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    from convdiff.frameworks.keras import make_lambdas_serializable

    make_lambdas_serializable(model)
    model.save(path)
    Path(marker).unlink(missing_ok=True)  # building the model ran it once already
    return path


def pickled_module(path: str, marker: str) -> str:
    """A .pt whose pickle runs code (what ``torch.save(model)`` of a hostile class gives)."""
    Path(path).write_bytes(pickle.dumps(_Payload(marker)))
    return path


def pickled_pt2(path: str, marker: str) -> str:
    """A valid torch.export archive whose bias is marked ``use_pickle`` and holds a pickle that
    runs code: torch.export.load unpickles such payloads with ``weights_only=False``."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    program = torch.export.export(Tiny().eval(), (torch.randn(2, 3, 8, 8),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    name = next(n for n in source.namelist() if n.endswith("weights/model_weights_config.json"))
    config = json.loads(source.read(name))
    bias = config["config"]["conv.bias"]
    bias["use_pickle"] = True
    hostile = name.rsplit("/", 1)[0] + "/" + bias["path_name"]
    replaced = {name: json.dumps(config).encode(), hostile: pickle.dumps(_Payload(marker))}
    with zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            out.writestr(info, replaced.get(info.filename, source.read(info.filename)))
    return path
