"""TVM Relax import and the canonical layer graph, the ground the four localization stages
stand on.

- :mod:`convdiff.ir.graph`: :class:`~convdiff.ir.graph.CanonicalGraph` and its layers
  (framework-neutral; JSON + npz).
- :mod:`convdiff.ir.tvm_import`: child side, run in a ``tvm`` worker: import a model with TVM's
  Relax frontends (onnx, tflite, torch .pt2), read its layer graph, or compile it for llvm and
  run it as an independent runtime.
- :mod:`convdiff.ir.tflite_quant`: int8 weights, scales and zero points read from a .tflite
  flatbuffer (for the dynamic-range files TVM refuses).
- :mod:`convdiff.ir.canonicalize` and :mod:`convdiff.ir.align`: pure numpy, run anywhere.

Worker kind ``tvm``: TVM never shares a process with TensorFlow (not shown safe, and TF is
not needed: the ``tflite`` package reads flatbuffers without it). It does import torch, for
``from_exported_program`` needs the ExportedProgram object in the same process; measured here:
torch 2.14 + TVM 0.27 in one worker import and run a .pt2 fine (first import 8.6 s, 0.9 GB).

Keras and SavedModel models have no TVM frontend. :func:`import_via_pool` takes them through
one converter in a ``tf`` worker first, at full float precision: ``route="tflite"``
(TFLiteConverter without optimization: float32 weights bit for bit; it folds BatchNorm and fuses
activations, which canonicalization undoes anyway) or ``route="onnx"`` (tf2onnx). Choose the
route that is *not* the conversion under test, so the tool being judged does not also produce
the reference: :func:`keras_route` does that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.ir.graph import CanonicalGraph

TVM_IMPORT = "convdiff.ir.tvm_import"
KERAS_ROUTES = {"tflite": "tflite", "onnx": "onnx"}


def keras_route(dst: str) -> str:
    """The route into TVM for a Keras/TF source whose conversion to ``dst`` is under test."""
    return "onnx" if dst == "tflite" else "tflite"


def import_via_pool(
    pool: Any, framework: str, path: str | Path, out_dir: str | Path, route: str = "tflite"
) -> tuple[CanonicalGraph | None, dict[str, Any]]:
    """Import any convdiff model into TVM from the orchestrator (frameworks stay in workers).

    Returns the (raw, not canonicalized) graph, or None with ``info["error"]`` saying which
    step failed; ``info`` holds the import task's value and, for Keras/TF, the route taken.
    A Keras/TF model whose route conversion (or its TVM import) fails takes the other route
    (onnx2keras files, say, crash the TFLiteConverter on int64 MEAN axes); ``info["notes"]``
    then says why.
    """
    if framework not in ("keras", "tf"):
        return _import(
            pool, framework, path, Path(out_dir), {"framework": framework, "route": None}
        )
    if route not in KERAS_ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {tuple(KERAS_ROUTES)}")
    failures: list[str] = []
    for choice in (route, *(r for r in KERAS_ROUTES if r != route)):
        graph, info = _via_route(pool, framework, path, Path(out_dir), choice)
        if graph is not None:
            if failures:
                notes = [
                    f"the {r} route failed ({why}); took the {choice} route" for r, why in failures
                ]
                info["notes"] = [*notes, *(info.get("notes") or [])]
            return graph, info
        failures.append((choice, info["error"]))
    info["error"] = "; ".join(f"{r} route: {why}" for r, why in failures)
    return None, info


def _via_route(
    pool: Any, framework: str, path: str | Path, out: Path, route: str
) -> tuple[CanonicalGraph | None, dict[str, Any]]:
    """A Keras/TF model converted at full float precision, then imported."""
    tool = "TFLiteConverter" if route == "tflite" else "tf2onnx"
    info: dict[str, Any] = {"framework": framework, "route": f"{framework} -> {route} ({tool})"}
    converted = pool.call(
        "tf",
        "convdiff.tasks:convert",
        src=framework,
        dst=KERAS_ROUTES[route],
        src_path=str(path),
        out_dir=str(out / f"route-{route}"),
        options={"tflite_opt": "none"} if route == "tflite" else {},
    )
    if not converted:
        info["error"] = f"route conversion failed: {converted.error_type}: {converted.message}"
        return None, info
    return _import(pool, KERAS_ROUTES[route], converted.value["path"], out, info)


def _import(
    pool: Any, framework: str, path: str | Path, out: Path, info: dict[str, Any]
) -> tuple[CanonicalGraph | None, dict[str, Any]]:
    outcome = pool.call(
        "tvm", f"{TVM_IMPORT}:import_graph", framework=framework, path=str(path), out_dir=str(out)
    )
    if not outcome:
        info["error"] = f"TVM import failed: {outcome.error_type}: {outcome.message}"
        return None, info
    info.update(outcome.value)
    graph = CanonicalGraph.load(Path(outcome.value["graph"]), Path(outcome.value["params"]))
    if info["route"]:
        graph.meta["route"] = info["route"]
    return graph, info
