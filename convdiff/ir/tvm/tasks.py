"""Child-side task entry points of the ``tvm`` worker, called by name
(:data:`convdiff.runtime.client.TVM`): their signatures and values are the worker protocol.

Each task takes and returns paths and JSON values only; the Relax module never leaves the
worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.core.arrays import open_images, read_images
from convdiff.ir.tvm import execute
from convdiff.ir.tvm.extract import extract
from convdiff.ir.tvm.frontends import load_module


def import_graph(framework: str, path: str, out_dir: str) -> dict[str, Any]:
    """Import a model into TVM Relax and write its (not yet canonicalized) layer graph.

    Returns ``{"graph", "params", "ops", "refused", "notes", "quant", "twin",
    "import_seconds"}``; ``refused`` is the frontend's exact refusal of the file itself (then the
    graph comes from a legitimate substitute, described in ``notes``), or None; ``twin`` the
    float twin imported in the file's place (a quantized file), or None.
    """
    import tvm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    imported = load_module(framework, path, out)
    seconds = time.perf_counter() - started
    meta = {
        "framework": framework,
        "path": str(path),
        "tvm": tvm.__version__,
        "refused": imported.refused,
        "notes": imported.notes,
    }
    graph = extract(imported.mod, meta)
    (out / "relax.py").write_text(imported.mod.script(show_meta=False))
    json_path, npz_path = graph.save(out / "graph.json")
    return {
        "graph": str(json_path),
        "params": str(npz_path),
        "ops": len(graph.ops()),
        "refused": imported.refused,
        "notes": imported.notes,
        "quant": imported.quant_npz,
        "twin": imported.twin,
        "import_seconds": seconds,
    }


def run_tvm(
    framework: str,
    path: str,
    inputs_npz: str,
    outputs_npz: str,
    layout: str = "auto",
    layers: list[str] | None = None,
    images: list[int] | None = None,
    activations_npz: str | None = None,
    run_images: list[int] | None = None,
) -> dict[str, Any]:
    """Compile the imported module for llvm ONCE and run it on ``x`` (NHWC) of ``inputs_npz``.

    An independent runtime: TVM's own kernels, not the framework's. The batch is fed slice by
    slice when the module's batch dimension is fixed. Saves ``y`` (flattened per sample).

    Activations: with ``layers`` (raw layer ids, as :func:`import_graph` names them) and
    ``activations_npz``, the same compile also returns those intermediate tensors -- ``main``
    is rebuilt to return ``(output, *tensors)`` -- and the npz gets, per layer id, its output
    in *logical* layout (NCHW for 4-D) for the images ``images`` (indices into ``x``; all
    when None), stacked on axis 0. ``run_images`` (ascending indices, a superset of
    ``images``) runs those images only, and ``y`` holds their outputs, in that order; None runs
    them all (TVM untuned takes seconds per image). Layer ids the module does not have are listed in
    the value's ``activations["missing"]``; a mapping that cannot be trusted (ids unlike
    import_graph's) leaves the npz unwritten and says why in ``activations["error"]``.
    """
    import tvm

    started = time.perf_counter()
    imported = load_module(framework, path, Path(outputs_npz).parent / "tvm-import")
    imported_at = time.perf_counter()
    compiled = execute.compile_module(imported.mod, layers if activations_npz else None)
    compiled_at = time.perf_counter()
    layout = execute.input_layout(layout, compiled.input_shape)
    stored = open_images(inputs_npz)  # an .npy is read only where indexed
    ran = list(range(len(stored))) if run_images is None else [int(i) for i in run_images]
    wanted = ran if images is None else [int(i) for i in images]
    x = _images(stored, layout, ran)  # only the images it runs: row k is image ran[k]
    row = {image: k for k, image in enumerate(ran)}
    y, acts = execute.run(compiled, x, list(range(len(ran))), [row[i] for i in wanted])
    finished = time.perf_counter()
    np.savez(outputs_npz, y=y)
    act_info = compiled.activations
    if compiled.exposed and activations_npz:
        np.savez(activations_npz, **acts)
        act_info = {**(act_info or {}), "npz": activations_npz, "images": wanted}
    return {
        "layout": layout,
        "input_shape": compiled.input_shape,
        "output_shape": list(y.shape),
        "refused": imported.refused,
        "twin": imported.twin,
        "notes": imported.notes,
        "import_seconds": imported_at - started,
        "compile_seconds": compiled_at - imported_at,
        "run_seconds": finished - compiled_at,
        "tvm": tvm.__version__,
        "activations": act_info,
    }


def _images(stored: np.ndarray, layout: str, indices: list[int]) -> np.ndarray:
    """The images ``indices`` of ``stored`` (NHWC, as every runtime task receives them, from
    :func:`convdiff.core.arrays.open_images`) as float32 in the module's ``layout``."""
    x = read_images(stored, indices)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def run_tvm_forced(
    framework: str,
    path: str,
    inputs_npz: str,
    images: list[int],
    fed_npz: str,
    measured: list[str],
    out_npz: str,
    layout: str = "auto",
) -> dict[str, Any]:
    """Run the model on the images ``images`` of ``inputs_npz`` with the tensors of
    ``fed_npz`` (raw layer id -> one logical tensor per image, in ``images``' order) fed in
    place of its own, and save the tensors of ``measured`` it then computes (one per image,
    stacked) to ``out_npz``: each segment of the model run on another model's activations
    (:func:`convdiff.ir.tvm.execute.compile_forced`). Tensors that cannot be fed (a tuple, a
    size the module does not hold) are listed in ``skipped`` and computed as usual."""
    started = time.perf_counter()
    imported = load_module(framework, path, Path(out_npz).parent / "tvm-import")
    with np.load(fed_npz) as data:
        fed = {k: data[k] for k in data.files}
    sizes = {lid: int(v[0].size) for lid, v in fed.items() if len(v)}
    compiled = execute.compile_forced(imported.mod, sizes, measured)
    compiled_at = time.perf_counter()
    layout = execute.input_layout(layout, execute.input_shape(imported.mod))
    x = _images(open_images(inputs_npz), layout, [int(i) for i in images])  # row k: images[k]
    measured_out: dict[str, list[np.ndarray]] = {lid: [] for lid, _, _ in compiled.measured}
    for k in range(len(images)):
        values = {lid: fed[lid][k] for lid, _, _ in compiled.forced}
        for lid, value in execute.run_forced(compiled, x[k : k + 1], values).items():
            measured_out[lid].append(value if value.shape[:1] == (1,) else value[None])
    np.savez(out_npz, **{lid: np.concatenate(v) for lid, v in measured_out.items() if v})
    return {
        "npz": out_npz,
        "fed": [lid for lid, _, _ in compiled.forced],
        "skipped": compiled.skipped,
        "compile_seconds": compiled_at - started,
        "run_seconds": time.perf_counter() - compiled_at,
    }
