"""Both models of a localization into TVM Relax, from the orchestrator (frameworks stay in
workers), and the names their files give the layers.

Keras and SavedModel models have no TVM frontend: :func:`import_via_pool` takes them through
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
from convdiff.ir.names import file_names
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool

KERAS_ROUTES = {"tflite": "tflite", "onnx": "onnx"}


def keras_route(dst: str) -> str:
    """The route into TVM for a Keras/TF source whose conversion to ``dst`` is under test."""
    return "onnx" if dst == "tflite" else "tflite"


def import_via_pool(
    pool: WorkerPool,
    framework: str,
    path: str | Path,
    out_dir: str | Path,
    route: str = "tflite",
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
    pool: WorkerPool, framework: str, path: str | Path, out: Path, route: str
) -> tuple[CanonicalGraph | None, dict[str, Any]]:
    """A Keras/TF model converted at full float precision, then imported."""
    tool = "TFLiteConverter" if route == "tflite" else "tf2onnx"
    info: dict[str, Any] = {"framework": framework, "route": f"{framework} -> {route} ({tool})"}
    options = {"tflite_opt": "none"} if route == "tflite" else {}
    converted = client.convert(
        pool, "tf", framework, KERAS_ROUTES[route], path, out / f"route-{route}", options
    )
    if not converted:
        info["error"] = f"route conversion failed: {converted.error_type}: {converted.message}"
        return None, info
    return _import(pool, KERAS_ROUTES[route], converted.value["path"], out, info)


def _import(
    pool: WorkerPool, framework: str, path: str | Path, out: Path, info: dict[str, Any]
) -> tuple[CanonicalGraph | None, dict[str, Any]]:
    outcome = client.import_graph(pool, framework, path, out)
    if not outcome:
        info["error"] = f"TVM import failed: {outcome.error_type}: {outcome.message}"
        return None, info
    info.update(outcome.value)
    graph = CanonicalGraph.load(Path(outcome.value["graph"]), Path(outcome.value["params"]))
    if info["route"]:
        graph.meta["route"] = info["route"]
    return graph, info


def layer_names(
    pool: WorkerPool, raw: CanonicalGraph, model: Path
) -> tuple[dict[str, str], dict[str, int]]:
    """:func:`convdiff.ir.names.file_names` of a model, with what only a framework can read
    (a torch.export program's nodes; a converted Keras model's layer classes) read in its
    worker first. A read that fails leaves the conversion's own op names, or no names."""
    torch_ops = keras_classes = None
    if raw.meta.get("framework") == "torch":
        outcome = client.torch_file_ops(pool, str(raw.meta.get("path")))
        torch_ops = outcome.value if outcome else None
    if raw.meta.get("route") and Path(model).suffix in (".keras", ".h5"):
        outcome = client.keras_layer_classes(pool, model)
        keras_classes = outcome.value if outcome else None
    return file_names(raw, torch_ops, keras_classes)


__all__ = ["import_via_pool", "keras_route", "layer_names"]
