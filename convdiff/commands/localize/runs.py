"""Running the models for localization: the evidence of the inputs and tools stages, and the
graph stage's activation evidence.

:func:`measure_runs` runs the source and the target on the run's images in their own runtimes
(workers), the target again on its own framework's preprocessing, and at most one TVM task per
model: one compile that gives the tools stage the target file on TVM and the graph stage the
aligned layers' tensors on the images whose top-1 labels disagree. Tensors stay in
``<out>/runs``; what is returned is JSON, the stages' ``ctx.evidence``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.commands.localize.types import LocalizeConfig, RunFiles
from convdiff.commands.run.types import RunReport
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import ImageOptions, PreprocessOptions, group_of
from convdiff.core.progress import Progress
from convdiff.frameworks import framework, package_version
from convdiff.inputs import data as datasets
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.inputs.source import SourceSpec
from convdiff.inputs.spec import check_classifier, resolve_spec
from convdiff.inputs.stream import save_images
from convdiff.ir.graph import CanonicalGraph
from convdiff.ir.segments import FunctionCheck, Point
from convdiff.metrics import PairMetrics, abs_max, compare, compare_rows, summarize
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from convdiff.stages import StageContext, activations
from convdiff.stages.findings import jsonable

RUN_STAGES = ("inputs", "tools")  # the stages that run the models (on images)
MAX_ACTIVATION_IMAGES = 4  # disagreeing images whose activations are compared
MAX_FUNCTION_IMAGES = 1  # images the target's segments run on (the first disagreeing one)
MAX_TVM_IMAGES = 4  # images TVM runs for the tools stage (the activation images among them)
TVM_RUNTIMES = ("onnx", "tflite", "torch")  # frameworks TVM has a frontend for


@dataclass(frozen=True)
class TvmSide:
    """What one model's TVM run reads for the graph stage: the file TVM imports (a Keras or
    SavedModel model's float conversion, ``raw.meta["path"]``) and the raw layer ids whose
    outputs stand for aligned canonical layers (``Layer.tensor``)."""

    framework: str
    path: str
    layers: tuple[str, ...]


def tvm_side(
    raw: CanonicalGraph, canon: CanonicalGraph, matched: list[tuple[str, str, str]], side: int
) -> TvmSide:
    paired = [p[side] for p in matched]
    layers = tuple(dict.fromkeys(canon[lid].tensor for lid in paired if canon[lid].tensor))
    return TvmSide(str(raw.meta["framework"]), str(raw.meta["path"]), layers)


@dataclass(frozen=True)
class Inputs:
    """What the model runs are fed, settled before any work: the source's preprocessing and
    both models' input shapes."""

    spec: PreprocessSpec
    source_shape: list[Any]
    target_shape: list[Any]


def resolve_inputs(
    pool: WorkerPool, config: LocalizeConfig, source: SourceSpec, target: SourceSpec
) -> Inputs:
    """Load both models in their runtimes and settle the source's preprocessing from the
    options, as `convdiff run` does (a bad option is the same one-line error, exit 2)."""
    src_shape = _probe(pool, source, "source")
    dst_shape = _probe(pool, target, "target")
    spec = _spec(source.framework, src_shape, config, config.preprocess, True)
    return Inputs(spec, src_shape, dst_shape)


def measure_runs(
    pool: WorkerPool,
    config: LocalizeConfig,
    source: SourceSpec,
    target: SourceSpec,
    out: Path,
    progress: Progress,
    inputs: Inputs,
    sides: tuple[TvmSide, TvmSide] | None = None,
    function_points: list[Point] | None = None,
) -> dict[str, Any]:
    """Run the models the inputs and tools stages (and the graph stage's activation evidence,
    given ``sides``) need, on the run's images; return their evidence (JSON numbers; tensors
    stay in ``out/runs``).

    Source on its preprocessing; the target on exactly those tensors (the worker changes only
    the layout); for ``inputs`` the target again on its own framework's preprocessing. Then at
    most ONE TVM task per model (one compile each): the target file on TVM on the source's
    tensors, for ``tools``, which also returns the target's activations on the images whose
    top-1 labels differ (at most :data:`MAX_ACTIVATION_IMAGES`); the source's TVM run returns
    its activations on those images only. No disagreeing image: no activation run, and
    ``activations["note"]`` says so. A model that fails to run becomes ``{"error": ...}``: its
    stage then crashes, the others still run.
    """
    records = _records(config)
    names, accepted = [r.name for r in records], [r.accepted for r in records]
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    files = RunFiles(runs)
    spec, dst_shape = inputs.spec, inputs.target_shape
    with progress.step(f"preparing {len(records)} images ({spec.describe()})"):
        save_images(files.x_source, spec, records, runs / "scratch")
    evidence: dict[str, Any] = {}
    wanted = [s for s in RUN_STAGES if s in config.stages]
    with progress.step(f"running the source on {source.framework}"):
        y_src, error = _native(
            pool, config, source, files.x_source, files.outputs("source"), spec.layout
        )
    if error is None:
        with progress.step(f"running the target on {target.framework} (source's tensors)"):
            y_dst, error = _native(pool, config, target, files.x_source, files.outputs("target"))

    def failed(why: str) -> dict[str, Any]:
        """Every wanted stage's evidence is the error: those stages crash, the others run."""
        evidence: dict[str, Any] = {stage: {"error": why} for stage in wanted}
        if sides is not None:
            evidence["activations"] = {"note": f"no activation evidence: {why}"}
        return evidence

    if error is not None:
        return failed(error)
    try:
        rows, note = compare_rows(y_src, y_dst)  # one read of both outputs, for all below
    except ValueError as exc:  # outputs of other sizes (not 1001 against 1000 classes)
        return failed(str(exc))
    pair = summarize(rows, names, accepted, note)
    same = _metrics(pair)
    if "inputs" in wanted:
        evidence["inputs"] = _inputs_evidence(
            pool, config, target, dst_shape, spec, records, runs, y_src, same, progress
        )
    differ = {d.image for d in pair.disagreeing}
    chosen = [i for i, n in enumerate(names) if n in differ][:MAX_ACTIVATION_IMAGES]
    tvm_images = _tvm_images(rows["max_abs"], chosen)
    act: dict[str, Any] | None = None
    if sides is not None:
        act = {
            "images": [names[i] for i in chosen],
            "indices": chosen,
            "disagreeing": len(differ),
            "max_images": MAX_ACTIVATION_IMAGES,
        }
        if not chosen:
            act["note"] = (
                f"no image's top-1 label differs between the models (of {len(names)}): the "
                "first-divergence check was skipped"
                + (" (the segments were compared by function)" if function_points else "")
            )
        elif len(differ) > len(chosen):
            act["note"] = (
                f"activations compared on the first {len(chosen)} of {len(differ)} "
                "disagreeing images"
            )
    measure = act is not None and bool(chosen) and sides is not None
    tvm_target = target.framework in TVM_RUNTIMES
    outcome = act_outcome = None
    if tvm_target and ("tools" in wanted or measure):
        # the tools stage's TVM run of the target file, its activations from the same compile
        with progress.step("running the target file on TVM (llvm)"):
            outcome = _run_tvm(
                pool, target.framework, str(target.file), runs, "target", "auto",
                sides[1].layers if measure and sides else None, chosen, tvm_images,
            )  # fmt: skip
        if measure and "tools" in wanted and not outcome:
            # exposing the tensors may be what failed: the tools stage still gets its run
            act_outcome = outcome
            with progress.step("running the target file on TVM (llvm) without activations"):
                outcome = _run_tvm(
                    pool, target.framework, str(target.file), runs, "target", "auto", None,
                    chosen, tvm_images,
                )  # fmt: skip
    elif measure and sides:  # no TVM frontend (Keras): the float conversion TVM imported
        with progress.step("running the target's float conversion on TVM for its activations"):
            outcome = _run_tvm(
                pool, sides[1].framework, sides[1].path, runs, "target-route", "auto",
                sides[1].layers, chosen, chosen,
            )  # fmt: skip
    if "tools" in wanted:
        evidence["tools"] = _runtime_evidence(
            target, runs, y_src[tvm_images], y_dst[tvm_images], same,
            [names[i] for i in tvm_images], [accepted[i] for i in tvm_images],
            outcome if tvm_target else None,
        )  # fmt: skip
    if sides is not None and (measure or function_points):
        if measure and act is not None:
            act["target"] = _activation_outcome(outcome if act_outcome is None else act_outcome)
        seen = chosen or (tvm_images[:MAX_FUNCTION_IMAGES] if function_points else [])
        # the aligned layers' tensors only for the first-divergence check (disagreeing images)
        aligned = sides[0].layers if measure else ()
        wanted_a = tuple(dict.fromkeys([*aligned, *(p.tensor_a for p in function_points or [])]))
        with progress.step("running the source on TVM (llvm) for its activations"):
            source_run = _run_tvm(
                pool, sides[0].framework, sides[0].path, runs, "source", spec.layout,
                wanted_a, seen, seen,
            )  # fmt: skip
        if measure and act is not None:
            act["source"] = _activation_outcome(source_run)
        if function_points:
            evidence["function"] = _function_check(
                pool, sides[1], runs, function_points, source_run, seen,
                [names[i] for i in seen[:MAX_FUNCTION_IMAGES]], progress,
            )  # fmt: skip
    if act is not None:
        evidence["activations"] = json.loads(json.dumps(jsonable(act)))
    return evidence


def _function_check(
    pool: WorkerPool,
    target: TvmSide,
    runs: Path,
    points: list[Point],
    source_run: Any,
    seen: list[int],
    images: list[str],
    progress: Progress,
) -> dict[str, Any]:
    """Feed the source's tensors at the points to the target on TVM and measure what the
    target computes at each (:mod:`convdiff.ir.segments`): the JSON form of a
    :class:`FunctionCheck`, or ``{"error": ...}`` when a run failed."""
    source = _activation_outcome(source_run)
    if "error" in source:
        return {"error": f"the source did not run on TVM: {source['error']}"}
    count = len(images)
    with np.load(source["npz"]) as data:
        acts = {k: data[k][:count] for k in data.files}
    fed = {p.tensor_b: acts[p.tensor_a] for p in points if p.fed and p.tensor_a in acts}
    fed_npz, out_npz = runs / "function-fed.npz", runs / "function-target.npz"
    np.savez(fed_npz, **fed)
    with progress.step(f"running the target's segments on the source's tensors ({count} images)"):
        outcome = client.run_tvm_forced(
            pool, target.framework, target.path, RunFiles(runs).x_source,
            images=seen[:count], fed_npz=fed_npz, measured=[p.tensor_b for p in points],
            out_npz=out_npz,
        )  # fmt: skip
    if not outcome:
        return {"error": f"TVM could not run the target: {outcome.error_type}: {outcome.message}"}
    check = FunctionCheck(points, images=images, skipped=outcome.value["skipped"])
    with np.load(out_npz) as data:
        for p in points:
            if p.tensor_a in acts and p.tensor_b in data.files:
                check.divergence[p.b] = activations.divergence(acts[p.tensor_a], data[p.tensor_b])
    return {**check.to_json(), "compile_seconds": outcome.value["compile_seconds"]}


def _tvm_images(gap: np.ndarray, chosen: list[int]) -> list[int]:
    """The few images TVM runs (it is slow: seconds per image untuned): the disagreeing ones
    whose activations are compared, topped up with those whose outputs differ most (``gap``:
    each image's max |source - target|), at most :data:`MAX_TVM_IMAGES`, ascending."""
    rest = [int(i) for i in np.argsort(-gap, kind="stable") if int(i) not in chosen]
    return sorted((chosen + rest)[:MAX_TVM_IMAGES])


def _run_tvm(
    pool: WorkerPool,
    fw: str,
    path: str,
    runs: Path,
    side: str,
    layout: str,
    layers: tuple[str, ...] | None,
    images: list[int],
    run_images: list[int],
) -> Any:
    """One TVM task (one compile): ``y-<side>-tvm.npz`` on ``run_images`` and, given
    ``layers``, ``act-<side>.npz`` on ``images`` (a subset of ``run_images``)."""
    files = RunFiles(runs)
    return client.run_tvm(
        pool,
        fw,
        path,
        files.x_source,
        files.tvm_outputs(side),
        layout=layout,
        layers=list(layers) if layers else None,
        images=images if layers else None,
        activations_npz=files.activations(side.removesuffix("-route")) if layers else None,
        run_images=run_images,
    )


def _activation_outcome(outcome: Any) -> dict[str, Any]:
    """One side's activation run: its npz, or why there is none (JSON only)."""
    if outcome is None:
        return {"error": "not run"}
    if not outcome:
        return {"error": f"TVM could not run it: {outcome.error_type}: {outcome.message}"}
    info = outcome.value.get("activations") or {}
    if "error" in info or "npz" not in info:
        return {"error": info.get("error", "no activations returned")}
    return {
        "npz": info["npz"],
        "layers": len(info["layers"]),
        "missing": info["missing"],
        "compile_seconds": outcome.value["compile_seconds"],
        "run_seconds": outcome.value["run_seconds"],
    }


def activation_rows(
    act: dict[str, Any], a: CanonicalGraph, b: CanonicalGraph, alignment: Any
) -> dict[str, Any]:
    """The activation evidence with its per-pair divergences (``rows``) computed from the two
    npz files; a side that did not run leaves a note and no rows."""
    act = {**act, "tolerance": activations.TOLERANCE}
    if act.get("note") and not act.get("indices"):
        return act
    if "error" in act.get("source", {}) or "error" in act.get("target", {}):
        errors = [
            f"{side}: {act[side]['error']}"
            for side in ("source", "target")
            if "error" in act.get(side, {})
        ]
        act["note"] = "no activation evidence (" + "; ".join(errors) + ")"
        return act
    with np.load(act["source"]["npz"]) as xa, np.load(act["target"]["npz"]) as xb:
        acts_a = {k: xa[k] for k in xa.files}
        acts_b = {k: xb[k] for k in xb.files}
    matched = activations.pairs(StageContext(a, b, alignment))
    rows = activations.compare(a, b, matched, acts_a, acts_b)
    act["rows"] = json.loads(json.dumps(jsonable(rows)))
    act["compared"] = len(rows)
    return act


def _inputs_evidence(
    pool: WorkerPool,
    config: LocalizeConfig,
    target: SourceSpec,
    dst_shape: list[Any],
    spec: PreprocessSpec,
    records: list[datasets.ImageRecord],
    runs: Path,
    y_src: np.ndarray,
    same: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    """The inputs stage's evidence: the target on its own framework's preprocessing."""
    files = RunFiles(runs)
    names, accepted = [r.name for r in records], [r.accepted for r in records]
    origin = f"--target-preprocess {config.target_preprocess}"
    if config.target_preprocess is None:
        own_spec, origin = spec, "the source's (no --target-preprocess given)"
    else:
        own_spec = _spec(target.framework, dst_shape, config, config.target_preprocess, False)
    item: dict[str, Any] = {
        "source_spec": {**spec.to_dict(), "description": spec.describe()},
        "target_spec": {
            **own_spec.to_dict(),
            "description": own_spec.describe(),
            "origin": origin,
        },
        "same_tensors": same,
        "own_preprocessing": None,
    }
    if own_spec != spec:
        with progress.step(f"running the target on its own preprocessing ({own_spec.describe()})"):
            save_images(files.x_target, own_spec, records, runs / "scratch")
            y_own, error = _native(
                pool, config, target, files.x_target, files.outputs("target-own")
            )
        if error is None:
            item["own_preprocessing"] = _metrics(compare(y_src, y_own, names, accepted))
        else:
            item = {"error": error}
    return json.loads(json.dumps(jsonable(item)))


def _runtime_evidence(
    target: SourceSpec,
    runs: Path,
    y_src: np.ndarray,
    y_dst: np.ndarray,
    same: dict[str, Any],
    names: list[str],
    accepted: list[Any],
    outcome: Any,
) -> dict[str, Any]:
    """The target file on TVM (``outcome`` of its run_tvm task, None when TVM has no frontend
    for it) against its own runtime and against the source."""
    info = framework(target.framework)
    item: dict[str, Any] = {
        "runtime": info.title,
        "runtime_version": info.version(),
        "tvm_version": package_version("apache-tvm") or "",
        "scale": abs_max(y_dst),
        "native_vs_source": same,
        "native_vs_tvm": None,
        "tvm_vs_source": None,
        "tvm_images": names,  # TVM is slow: it runs these few (the disagreeing ones first)
    }
    if target.framework not in TVM_RUNTIMES:
        item["note"] = f"TVM has no {info.title} frontend: the runtime check was skipped"
        return item
    if not outcome:
        return {"error": f"TVM could not run the target: {outcome.error_type}: {outcome.message}"}
    with np.load(RunFiles(runs).tvm_outputs("target")) as data:
        y_tvm = data["y"]
    item["tvm_version"] = outcome.value.get("tvm", item["tvm_version"])
    if outcome.value.get("refused"):
        item["tvm_ran"] = "its float twin (TVM refused the file; int8 weights dequantized)"
    elif outcome.value.get("twin"):  # quantized ONNX, full-integer TFLite: always its twin
        item["tvm_ran"] = "its float twin (quantized weights dequantized, activations float)"
        item["twin_drops"] = (
            "the file's integer activations (quantized by its own ops), which the twin "
            "computes in float"
        )
    item["native_vs_tvm"] = _metrics(compare(y_dst, y_tvm, names, accepted))
    item["tvm_vs_source"] = _metrics(compare(y_src, y_tvm, names, accepted))
    return json.loads(json.dumps(jsonable(item)))


def chain_evidence(path: Path) -> dict[str, Any]:
    """The hops of a `convdiff run` report.json, as the tools stage reads them."""
    try:
        run_report = RunReport.from_json(Path(path).read_text())
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConvdiffError(
            f"cannot read the run report {path}: {exc}",
            "pass the report.json a `convdiff run` wrote",
        ) from None
    hops = []
    for hop in run_report.chain:
        agreement = hop.agreement
        hops.append(
            {
                "index": hop.index,
                "src": hop.src,
                "dst": hop.dst,
                "tool": hop.tool,
                "version": hop.version,
                "options": hop.options,
                "artifact": hop.artifact.path if hop.artifact else None,
                # not `if agreement`: PairMetrics is falsy when top-1 labels differ
                "top1_discrepancy": None if agreement is None else agreement.top1_discrepancy,
                "max_abs_diff": None if agreement is None else agreement.max_abs_diff,
                "crash": f"{hop.crash.failure}: {hop.crash.message}" if hop.crash else None,
            }
        )
    return jsonable(
        {"path": str(path), "max_discrepancy": run_report.max_discrepancy, "hops": hops}
    )


def converter_hop(chain: dict[str, Any] | None, target: Path) -> dict[str, Any] | None:
    """The hop of the run report that wrote the target file (by path, else the last hop)."""
    if not chain or not chain["hops"]:
        return None
    resolved = target.resolve()
    for hop in chain["hops"]:
        if hop["artifact"] and Path(hop["artifact"]).resolve() == resolved:
            return hop
    return chain["hops"][-1]


def _records(config: LocalizeConfig) -> list[datasets.ImageRecord]:
    return datasets.load_images(**asdict(group_of(ImageOptions, config))).records


def _probe(pool: WorkerPool, spec: SourceSpec, side: str) -> list[Any]:
    info = framework(spec.framework)
    outcome = client.probe(pool, info.name, spec.file)
    outcome.raise_user_error()
    if not outcome:
        raise ConvdiffError(
            f"cannot load the {side} {spec.file.name} as a {info.title} model: {outcome.message}",
            f"check that it is a complete {info.title} model file",
        )
    check_classifier(outcome.value, spec.file.name)
    return list(outcome.value.get("input_shape") or [])


def _spec(
    fw: str, shape: list[Any], config: LocalizeConfig, preset: str | None, options: bool
) -> PreprocessSpec:
    """One side's preprocessing, settled as `convdiff run` settles it
    (:func:`~convdiff.inputs.spec.resolve_spec`): the source's from the preset and options of
    the command line (``options``; a run's whole spec, ``config.source_spec``, is taken as it
    is); the target's own from its preset alone, at its own size."""
    if options and config.source_spec is not None:
        return config.source_spec
    if options:
        return resolve_spec(fw, shape, group_of(PreprocessOptions, config))
    own = PreprocessOptions(preprocess=preset, input_size=config.input_size)
    return resolve_spec(fw, shape, own, own_size=True)


def _native(
    pool: WorkerPool,
    config: LocalizeConfig,
    spec: SourceSpec,
    inputs: Path,
    outputs: Path,
    layout: str = "auto",
) -> tuple[np.ndarray, str | None]:
    info = framework(spec.framework)
    outcome = client.infer(
        pool,
        info.name,
        spec.file,
        inputs,
        outputs,
        layout=layout,
        batch_size=config.batch_size,
    )
    if not outcome:
        return np.empty(0), f"{info.title} could not run {spec.file.name}: {outcome.message}"
    return np.load(outputs, mmap_mode="r"), None  # read as needed: it can be large


def _metrics(m: PairMetrics) -> dict[str, Any]:
    keys = ("images", "top1_discrepancy", "top5_discrepancy", "max_abs_diff", "mean_abs_diff")
    return {k: getattr(m, k) for k in keys}
