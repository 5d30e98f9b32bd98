"""Plain-Python task functions for testing the worker machinery itself (no framework needed)."""

from __future__ import annotations

import ctypes
import os
import time


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def fail() -> None:
    raise ValueError("the tool said no\nsecond line of its message")


def segfault() -> None:
    print("about to dereference NULL", flush=True)
    ctypes.string_at(0)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def not_json() -> object:
    return object()


def user_error() -> None:
    from convdiff.core.errors import ConvdiffError

    raise ConvdiffError("weights file missing", "place it in ~/.keras/models")


def match_cast_module_layers() -> dict:
    """In a ``tvm`` worker: a Relax main whose reshape is bound by a MatchCast (as TVM's ONNX
    frontend writes a reshape to a computed shape), read by the extractor, then compiled with
    its tensors fed (the function check); the layers' ops and the fed run's output."""
    import numpy as np
    import tvm
    from tvm import relax

    from convdiff.ir.tvm import execute
    from convdiff.ir.tvm.extract import extract

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            r = bb.emit(relax.op.nn.relu(x))
            flat = bb.match_cast(relax.op.reshape(r, [4]), relax.TensorType([4], "float32"))
            out = bb.emit_output(relax.op.add(flat, relax.const(np.ones(4, "float32"))))
        bb.emit_func_output(out)
    mod = bb.get()
    graph = extract(mod)
    relu = next(lay.id for lay in graph.layers if lay.op == "relu")
    forced = execute.compile_forced(mod, {relu: 4}, [relu])
    fed = {relu: np.array([[5.0, 6.0, 7.0, 8.0]], "float32")}
    x_in = np.array([[-1.0, 2.0, -3.0, 4.0]], "float32")
    measured = execute.run_forced(forced, x_in, fed)
    result = forced.vm["main"](tvm.runtime.tensor(x_in), tvm.runtime.tensor(fed[relu]))
    return {
        "ops": [lay.op for lay in graph.layers],
        "measured": measured[relu].ravel().tolist(),
        "output": result[0].numpy().ravel().tolist(),
    }
