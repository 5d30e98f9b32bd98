"""`convdiff localize`: find where and why a converted model departs from its source.

The orchestrator of one localization. It imports both model files into TVM Relax through the
worker pool (frameworks stay in workers; Keras/TF take one float converter first, see
:func:`convdiff.ir.import_via_pool`), canonicalizes and aligns the two layer graphs, runs the
selected stages (:mod:`convdiff.stages`) and writes ``report.json`` and ``report.md`` in the
output folder. A stage that crashes is recorded and the others still run. The inputs and tools
stages judge measurements, not graphs: :func:`measure_runs` runs both models on images (native
runtimes and TVM, in workers) before the stages run. When it runs them and the graph stage is
selected, the same TVM runs (one compile per model) also return the intermediate tensors of
the aligned layers on the images whose top-1 labels disagree: the graph stage's activation
evidence (:mod:`convdiff.stages.activations`).

Layer names: findings name layers as the model files do (ONNX node names, TFLite op output
tensor names, a torch.export program's module paths, Keras layer names). TVM's importers keep
no names, but they emit one Relax op per file op in file order, so the k-th ``Conv`` node of
an ONNX file is the k-th ``conv2d`` of its raw graph; a kind whose counts differ keeps the
canonical ids.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import convdiff
from convdiff import data as datasets
from convdiff import preprocess
from convdiff.errors import ConvdiffError, InputShapeError
from convdiff.frameworks import framework, layout_of, package_version
from convdiff.ir import import_via_pool, keras_route
from convdiff.ir.align import Alignment, align, squeezed
from convdiff.ir.canonicalize import canonicalize
from convdiff.ir.graph import CanonicalGraph
from convdiff.metrics import PairMetrics, align_classes, compare
from convdiff.preprocess import PreprocessSpec
from convdiff.progress import Progress
from convdiff.report import RunReport, write_atomic
from convdiff.source import SourceSpec, resolve_source
from convdiff.stages import StageContext, activations, stage_function
from convdiff.stages.findings import STAGES, Finding, jsonable, ordered
from convdiff.stages.graph import activation_growth, rank
from convdiff.workers import WorkerPool

SCHEMA_VERSION = 1
GRAPH_STAGES = ("weights", "hyperparams", "graph")  # what the canonical graphs alone decide
RUN_STAGES = ("inputs", "tools")  # the stages that run the models (on images)
MAX_ACTIVATION_IMAGES = 4  # disagreeing images whose activations are compared
MAX_TVM_IMAGES = 4  # images TVM runs for the tools stage (the activation images among them)
TVM_RUNTIMES = ("onnx", "tflite", "torch")  # frameworks TVM has a frontend for


@dataclass(frozen=True)
class LocalizeConfig:
    """One `convdiff localize`: the two model files, the stages, where to write."""

    source: str
    target: str
    src: str | None = None  # framework of the source file (detected when None)
    dst: str | None = None
    stages: tuple[str, ...] = STAGES  # all five: the embedded sample images are always there
    out: Path | None = None
    timeout: float = 1800.0
    # inputs and tools stages: the images and the source's preprocessing (as `convdiff run`)
    data: Path | None = None
    labels: Path | None = None
    limit: int | None = None
    preprocess: str | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    layout: str | None = None
    resize: str | None = None
    target_preprocess: str | None = None  # preset the target's framework customarily uses
    run_report: Path | None = None  # a `convdiff run` report.json: which hop lost agreement
    source_spec: PreprocessSpec | None = None  # the source's whole spec (run --localize)
    batch_size: int = 8


@dataclass
class LocalizeReport:
    source: str
    target: str
    src: str
    dst: str
    stages: list[str]
    schema_version: int = SCHEMA_VERSION
    convdiff_version: str = ""
    created: str = ""
    out_dir: str = ""
    findings: list[Finding] = field(default_factory=list)
    suspects: list[dict[str, Any]] = field(default_factory=list)  # graph stage's ranking
    alignment: dict[str, Any] = field(default_factory=dict)  # pairs/unmatched counts
    imports: dict[str, Any] = field(default_factory=dict)  # per side: route, refusal, notes
    runs: dict[str, Any] = field(default_factory=dict)  # inputs/tools stages: what was run
    crashes: list[dict[str, str]] = field(default_factory=list)  # a stage that stopped
    notes: list[str] = field(default_factory=list)
    # bad input found after the work began (TVM cannot import a model): exit 2, and the
    # stages that could still run are reported
    error: str = ""
    # the graphs, alignment and names the stages read (the repair planner reads them too);
    # in memory only, never in report.json
    context: StageContext | None = field(default=None, repr=False, compare=False)

    @property
    def faults(self) -> list[Finding]:
        return [f for f in self.findings if f.is_fault]

    @property
    def exit_code(self) -> int:
        """0 nothing found, 1 findings, 3 a stage crashed, 2 bad input (``error``; bad input
        found before any work raises :class:`ConvdiffError` instead)."""
        if self.error:
            return 2
        if self.crashes:
            return 3
        return 1 if self.faults else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, context=None))  # asdict would copy every tensor
        data.pop("context")
        data["findings"] = [f.to_dict() for f in self.findings]
        return data

    def write(self, out: Path) -> None:
        write_atomic(out / "report.json", json.dumps(self.to_dict(), indent=2) + "\n")
        write_atomic(out / "report.md", to_markdown(self))


def localize(
    config: LocalizeConfig, progress: Progress | None = None, pool: WorkerPool | None = None
) -> LocalizeReport:
    """Localize the faults of ``config.target`` against ``config.source``; see the module doc.

    ``pool``: a running worker pool to reuse (tests share one); else one lives for this call.
    """
    from convdiff.run import prepare_out_dir

    unknown = [s for s in config.stages if s not in STAGES]
    if unknown:
        raise ConvdiffError(f"unknown stage {unknown[0]!r}", f"use some of: {', '.join(STAGES)}")
    if config.run_report is not None and "tools" not in config.stages:
        raise ConvdiffError("--run-report is read by the tools stage", "add tools to --stages")
    chain = chain_evidence(config.run_report) if config.run_report is not None else None
    source = resolve_source(config.source, config.src)
    target = resolve_source(config.target, config.dst)
    if source.file is None or target.file is None:
        raise ConvdiffError("localize compares two model files", "pass two model file paths")
    out = prepare_out_dir(config.out, f"localize-{source.name}-{target.name}")
    progress = progress or Progress()
    report = LocalizeReport(
        source=str(source.file),
        target=str(target.file),
        src=source.framework,
        dst=target.framework,
        stages=[s for s in STAGES if s in config.stages],
        convdiff_version=convdiff.__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        out_dir=str(out),
    )
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(WorkerPool(out / "logs", timeout=config.timeout))
        graphs = []
        for side, spec, other in (("source", source, target), ("target", target, source)):
            with progress.step(f"importing the {side} into TVM ({spec.framework})"):
                raw, info = import_via_pool(
                    pool, spec.framework, spec.file, out / "ir" / side, keras_route(other.framework)
                )
            report.imports[side] = {
                k: info.get(k) for k in ("route", "refused", "notes", "quant", "import_seconds")
            }
            if raw is None:
                report.imports[side]["error"] = str(info.get("error", ""))
                report.error = (
                    f"TVM cannot import the {side} {spec.file.name}: {_import_error(info)}; "
                    "the weights, hyperparams and graph stages need both models in TVM Relax"
                )
                break
            graphs.append((raw, canonicalize(raw), info))
        if report.error:
            return _without_graphs(report, config, pool, source, target, out, progress, chain)
        (raw_a, a, _), (raw_b, b, info_b) = graphs
        check_comparable(a, b, source.file.name, target.file.name)
        alignment = align(a, b)
        evidence: dict[str, Any] = {}
        if set(RUN_STAGES) & set(config.stages):
            sides = None
            if "graph" in config.stages:
                matched = activations.pairs(StageContext(a, b, alignment))
                sides = (_tvm_side(raw_a, a, matched, 0), _tvm_side(raw_b, b, matched, 1))
            evidence = measure_runs(pool, config, source, target, out, progress, sides)
            if "tools" in evidence:
                evidence["tools"]["run_report"] = chain
                evidence["tools"]["converter"] = _converter(chain, target.file)
            if "activations" in evidence:
                evidence["activations"] = _activation_rows(evidence["activations"], a, b, alignment)
                note = evidence["activations"].get("note")
                if note:
                    report.notes.append(f"graph: {note}")
            report.runs = evidence
        elif "graph" in config.stages:
            report.notes.append(
                "graph: no activation evidence (the models were not run; add inputs or tools "
                "to --stages)"
            )
        with progress.step("reading the layer names of the model files"):
            # a Keras source keeps its conversion's op names (the patch names target layers)
            names_a, _ = file_names(raw_a, pool)
            names_b, index_b = file_names(raw_b, pool, target.file)
    report.alignment = {
        "pairs": len(alignment.pairs),
        "unmatched": len(alignment.unmatched),
        "file": "ir/alignment.json",
    }
    write_atomic(out / "ir" / "alignment.json", json.dumps(alignment.to_json(), indent=1) + "\n")
    ctx = StageContext(
        a,
        b,
        alignment,
        names_a,
        names_b,
        quant_evidence(info_b, raw_b.meta["path"], index_b),
        evidence,
    )
    findings: list[Finding] = []
    for stage in report.stages:
        with progress.step(f"stage {stage}"):
            try:
                findings.extend(stage_function(stage)(ctx))
            except Exception as exc:  # a bug or an unforeseen graph: the other stages still run
                report.crashes.append({"stage": stage, "message": f"{type(exc).__name__}: {exc}"})
    report.findings = ordered(findings)
    report.context = ctx
    growth = activation_growth(ctx) if "graph" in report.stages else []
    report.suspects = rank(report.findings, growth)
    report.write(out)
    return report


def _without_graphs(
    report: LocalizeReport,
    config: LocalizeConfig,
    pool: WorkerPool,
    source: SourceSpec,
    target: SourceSpec,
    out: Path,
    progress: Progress,
    chain: dict[str, Any] | None,
) -> LocalizeReport:
    """A model TVM cannot import: the stages that judge runs, not graphs (inputs, tools) still
    run; the others are reported as not run, with TVM's refusal (``report.error``, exit 2)."""
    for stage in report.stages:
        if stage in GRAPH_STAGES:
            report.notes.append(f"{stage}: not run ({report.error.split(':')[0]})")
    wanted = [s for s in report.stages if s in RUN_STAGES]
    if wanted:
        evidence = measure_runs(pool, config, source, target, out, progress, None)
        if "tools" in evidence:
            evidence["tools"]["run_report"] = chain
            evidence["tools"]["converter"] = _converter(chain, target.file)
        report.runs = evidence
        ctx = StageContext(CanonicalGraph([], [], []), CanonicalGraph([], [], []), Alignment())
        ctx.evidence = evidence
        findings: list[Finding] = []
        for stage in wanted:
            with progress.step(f"stage {stage}"):
                try:
                    findings.extend(stage_function(stage)(ctx))
                except Exception as exc:  # the other stages still run
                    message = f"{type(exc).__name__}: {exc}"
                    report.crashes.append({"stage": stage, "message": message})
        report.findings = ordered(findings)
    report.write(out)
    return report


def _import_error(info: dict[str, Any]) -> str:
    """TVM's refusal, naming the unsupported op when TVM says which."""
    error = str(info.get("error", "unknown error"))
    marker = "are not supported for frontend"
    if marker in error:
        frontend, _, ops = error.split(marker, 1)[1].partition(":")
        return f"unsupported op {ops.strip()} (TVM{frontend.rstrip()} frontend; {error})"
    return error


def check_comparable(a: CanonicalGraph, b: CanonicalGraph, name_a: str, name_b: str) -> None:
    """Refuse two models that take different inputs or do different tasks (exit 2)."""
    in_a = [squeezed(a[i].shape) for i in a.inputs]
    in_b = [squeezed(b[i].shape) for i in b.inputs]
    if in_a != in_b:
        raise InputShapeError(
            f"{name_a} and {name_b} take different inputs (per image, logical C,H,W: "
            f"{_shapes(in_a)} vs {_shapes(in_b)})",
            "localize compares a model with its conversion: give both the same input size",
        )
    out_a = [int(np.prod(squeezed(a[o].shape))) for o in a.outputs]
    out_b = [int(np.prod(squeezed(b[o].shape))) for o in b.outputs]
    if len(out_a) != len(out_b) or any(abs(x - y) > 1 for x, y in zip(out_a, out_b, strict=True)):
        raise ConvdiffError(
            f"{name_a} and {name_b} do different tasks (outputs of {out_a} vs {out_b} values "
            "per image)",
            "localize compares a model with its conversion",
        )


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join("x".join(str(d) for d in s) for s in shapes)


# -- running the models: evidence for the inputs and tools stages --------------------------


@dataclass(frozen=True)
class TvmSide:
    """What one model's TVM run reads for the graph stage: the file TVM imports (a Keras or
    SavedModel model's float conversion, ``raw.meta["path"]``) and the raw layer ids whose
    outputs stand for aligned canonical layers (``Layer.tensor``)."""

    framework: str
    path: str
    layers: tuple[str, ...]


def _tvm_side(
    raw: CanonicalGraph, canon: CanonicalGraph, matched: list[tuple[str, str, str]], side: int
) -> TvmSide:
    paired = [p[side] for p in matched]
    layers = tuple(dict.fromkeys(canon[lid].tensor for lid in paired if canon[lid].tensor))
    return TvmSide(str(raw.meta["framework"]), str(raw.meta["path"]), layers)


def measure_runs(
    pool: WorkerPool,
    config: LocalizeConfig,
    source: SourceSpec,
    target: SourceSpec,
    out: Path,
    progress: Progress,
    sides: tuple[TvmSide, TvmSide] | None = None,
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
    src_shape = _probe(pool, source, "source")
    dst_shape = _probe(pool, target, "target")
    spec = _spec(source.framework, src_shape, config, config.preprocess, True)
    with progress.step(f"preparing {len(records)} images ({spec.describe()})"):
        np.savez(runs / "x-source.npz", x=preprocess.batch(spec, records))
    evidence: dict[str, Any] = {}
    wanted = [s for s in RUN_STAGES if s in config.stages]
    with progress.step(f"running the source on {source.framework}"):
        y_src, error = _native(
            pool, config, source, runs / "x-source.npz", runs / "y-source.npz", spec.layout
        )
    if error is None:
        with progress.step(f"running the target on {target.framework} (source's tensors)"):
            y_dst, error = _native(
                pool, config, target, runs / "x-source.npz", runs / "y-target.npz"
            )

    def failed(why: str) -> dict[str, Any]:
        """Every wanted stage's evidence is the error: those stages crash, the others run."""
        evidence: dict[str, Any] = {stage: {"error": why} for stage in wanted}
        if sides is not None:
            evidence["activations"] = {"note": f"no activation evidence: {why}"}
        return evidence

    if error is not None:
        return failed(error)
    try:
        pair = compare(y_src, y_dst, names, accepted)
    except ValueError as exc:  # outputs of other sizes (not 1001 against 1000 classes)
        return failed(str(exc))
    same = _metrics(pair)
    if "inputs" in wanted:
        evidence["inputs"] = _inputs_evidence(
            pool, config, target, dst_shape, spec, records, runs, y_src, same, progress
        )
    differ = {d.image for d in pair.disagreeing}
    chosen = [i for i, n in enumerate(names) if n in differ][:MAX_ACTIVATION_IMAGES]
    tvm_images = _tvm_images(y_src, y_dst, chosen)
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
                "activation check was skipped"
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
    if measure and act is not None and sides is not None:
        act["target"] = _activation_outcome(outcome if act_outcome is None else act_outcome)
        with progress.step("running the source on TVM (llvm) for its activations"):
            source_run = _run_tvm(
                pool, sides[0].framework, sides[0].path, runs, "source", spec.layout,
                sides[0].layers, chosen, chosen,
            )  # fmt: skip
        act["source"] = _activation_outcome(source_run)
    if act is not None:
        evidence["activations"] = json.loads(json.dumps(jsonable(act)))
    return evidence


def _tvm_images(y_src: np.ndarray, y_dst: np.ndarray, chosen: list[int]) -> list[int]:
    """The few images TVM runs (it is slow: seconds per image untuned): the disagreeing ones
    whose activations are compared, topped up with those whose outputs differ most, at most
    :data:`MAX_TVM_IMAGES`, ascending."""
    src, dst, _ = align_classes(y_src, y_dst)
    gap = np.abs(src - dst).reshape(len(src), -1).max(axis=1)
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
    return pool.call(
        "tvm",
        "convdiff.ir.tvm_import:run_tvm",
        framework=fw,
        path=path,
        inputs_npz=str(runs / "x-source.npz"),
        outputs_npz=str(runs / f"y-{side}-tvm.npz"),
        layout=layout,
        layers=list(layers) if layers else None,
        images=images if layers else None,
        activations_npz=str(runs / f"act-{side.removesuffix('-route')}.npz") if layers else None,
        all_images=False,
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


def _activation_rows(
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
            np.savez(runs / "x-target.npz", x=preprocess.batch(own_spec, records))
            y_own, error = _native(
                pool, config, target, runs / "x-target.npz", runs / "y-target-own.npz"
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
        "scale": float(np.abs(y_dst).max()) if y_dst.size else 0.0,
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
    with np.load(runs / "y-target-tvm.npz") as data:
        y_tvm = data["y"]
    item["tvm_version"] = outcome.value.get("tvm", item["tvm_version"])
    if outcome.value.get("refused"):
        item["tvm_ran"] = "its float twin (TVM refused the file; int8 weights dequantized)"
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


def _converter(chain: dict[str, Any] | None, target: Path) -> dict[str, Any] | None:
    """The hop of the run report that wrote the target file (by path, else the last hop)."""
    if not chain or not chain["hops"]:
        return None
    resolved = target.resolve()
    for hop in chain["hops"]:
        if hop["artifact"] and Path(hop["artifact"]).resolve() == resolved:
            return hop
    return chain["hops"][-1]


def _records(config: LocalizeConfig) -> list[datasets.ImageRecord]:
    if config.data is None:
        records = datasets.sample_set()
    else:
        records = datasets.image_folder(config.data, config.labels, limit=config.limit).records
    return records[: config.limit] if config.limit is not None else records


def _probe(pool: WorkerPool, spec: SourceSpec, side: str) -> list[Any]:
    info = framework(spec.framework)
    outcome = pool.call(
        info.worker, "convdiff.tasks:probe", framework=info.name, path=str(spec.file)
    )
    if not outcome:
        raise ConvdiffError(
            f"cannot load the {side} {spec.file.name} as a {info.title} model: {outcome.message}",
            f"check that it is a complete {info.title} model file",
        )
    return list(outcome.value.get("input_shape") or [])


def _spec(
    fw: str, shape: list[Any], config: LocalizeConfig, preset: str | None, options: bool
) -> PreprocessSpec:
    """One side's preprocessing at the model's own size and layout: the source's is the preset
    and options of the command line (``options``), the target's own is its preset alone; a
    run's source spec (``config.source_spec``) is taken as it is."""
    if options and config.source_spec is not None:
        return config.source_spec
    layout = layout_of(shape, framework(fw).layout)
    if options and config.layout:
        layout = config.layout.upper()
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    static = (h, w) if all(isinstance(v, int) and v > 0 for v in (h, w)) else None
    size = static or config.input_size
    if size is None:
        raise InputShapeError(
            f"the model's input shape {shape} does not say the image size", "pass --input-size H,W"
        )
    if not options:
        return preprocess.from_options(None, preset, tuple(size), layout=layout)
    return preprocess.from_options(
        None, preset, tuple(size), config.mean, config.std, layout, config.resize
    )


def _native(
    pool: WorkerPool,
    config: LocalizeConfig,
    spec: SourceSpec,
    inputs: Path,
    outputs: Path,
    layout: str = "auto",
) -> tuple[np.ndarray, str | None]:
    info = framework(spec.framework)
    outcome = pool.call(
        info.worker,
        "convdiff.tasks:infer",
        framework=info.name,
        path=str(spec.file),
        inputs=str(inputs),
        outputs=str(outputs),
        layout=layout,
        batch_size=config.batch_size,
    )
    if not outcome:
        return np.empty(0), f"{info.title} could not run {spec.file.name}: {outcome.message}"
    with np.load(outputs) as data:
        return data["y"], None


def _metrics(m: PairMetrics) -> dict[str, Any]:
    keys = ("images", "top1_discrepancy", "top5_discrepancy", "max_abs_diff", "mean_abs_diff")
    return {k: getattr(m, k) for k in keys}


# -- names the model files use ---------------------------------------------------------------

ONNX_KINDS = {
    "Conv": "conv2d",
    "Gemm": "dense",
    "MatMul": "dense",
    "MaxPool": "pool_max",
    "AveragePool": "pool_avg",
    "GlobalAveragePool": "pool_global_avg",
    "BatchNormalization": "batch_norm",
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softmax": "softmax",
    "Concat": "concat",
    "Clip": "clip",
    "Resize": "resize",
    "Pad": "pad",
}
TFLITE_KINDS = {
    "CONV_2D": "conv2d",
    "DEPTHWISE_CONV_2D": "conv2d",
    "FULLY_CONNECTED": "dense",
    "MAX_POOL_2D": "pool_max",
    "AVERAGE_POOL_2D": "pool_avg",
    "SOFTMAX": "softmax",
    "CONCATENATION": "concat",
    "RESIZE_BILINEAR": "resize",
    "RESIZE_NEAREST_NEIGHBOR": "resize",
    "PAD": "pad",
    "PADV2": "pad",
}


def file_names(
    raw: CanonicalGraph, pool: WorkerPool | None = None, model: Path | None = None
) -> tuple[dict[str, str], dict[str, int]]:
    """Layer id -> name in the model file, and layer id -> op index in the file (see the
    module docstring). Empty when the file cannot be read or is of another kind.

    ``pool`` reads what needs a framework: a torch.export program's nodes
    (:func:`convdiff.repair.torch_apply.file_ops`, in the ``torch`` worker) and, for a Keras
    ``model`` that TVM imported through a float conversion (``raw.meta["route"]``), its layer
    names (in the ``tf`` worker), onto which the conversion's op names are mapped
    (:func:`keras_names`)."""
    path, fw = raw.meta.get("path"), raw.meta.get("framework")
    try:
        if fw == "onnx":
            ops = _onnx_ops(path)
        elif fw == "tflite":
            ops = _tflite_ops(path)
        elif fw == "torch" and pool is not None:
            ops = _torch_ops(pool, str(path))
        else:
            return {}, {}
        if raw.meta.get("route") and model is not None and pool is not None:
            ops = _keras_ops(pool, model, ops)
    except Exception:  # names are a convenience: the canonical ids still identify layers
        return {}, {}
    names, index = {}, {}
    for kind in dict.fromkeys(k for k, _, _ in ops):
        in_file = [(name, i) for k, name, i in ops if k == kind]
        layers = [lay.id for lay in raw.layers if _kind(raw, lay) == kind]
        if len(in_file) == len(layers):
            for lid, (name, i) in zip(layers, in_file, strict=True):
                names[lid], index[lid] = name, i
    return names, index


def _torch_ops(pool: WorkerPool, path: str) -> list[tuple[str, str, int]]:
    outcome = pool.call("torch", "convdiff.repair.torch_apply:file_ops", path=path)
    if not outcome:
        raise RuntimeError(outcome.message)
    return [(str(k), str(n), int(i)) for k, n, i in outcome.value]


def _keras_ops(
    pool: WorkerPool, model: Path, ops: list[tuple[str, str, int]]
) -> list[tuple[str, str, int]]:
    """The float conversion's ops, renamed to the Keras layers they come from (a SavedModel
    has no layers: its ops keep the conversion's names)."""
    if Path(model).suffix not in (".keras", ".h5"):
        return ops
    outcome = pool.call("tf", "convdiff.repair.keras_apply:layer_classes", path=str(model))
    if not outcome:
        raise RuntimeError(outcome.message)
    renamed = keras_names(ops, outcome.value)
    return [(kind, renamed.get(name, name), i) for kind, name, i in ops]


def keras_names(ops: list[tuple[str, str, int]], classes: dict[str, str]) -> dict[str, str]:
    """Op name in a Keras model's conversion -> the Keras layer (``model.get_layer()``'s name).

    A name such as ``tiny_cnn_1/relu_1/Relu;tiny_cnn_1/conv_1/convolution`` holds several
    layers' name scopes, each perhaps with TF's ``_<n>`` suffix: the candidates are those whose
    class makes the op's kind (:func:`convdiff.repair.keras_apply.match_layer`). A layer goes to
    one op only: ops with one candidate left take it, which may leave one for another op, and
    so on; the ops of a layer's own kind before the activations a converter fused into it. An
    op still ambiguous keeps its own name."""
    from convdiff.repair.keras_apply import KIND_CLASSES, match_layer

    fused = ("softmax", "relu", "clip")
    candidates = {
        name: match_layer(name, kind, classes)
        for kind, name, _ in sorted(ops, key=lambda op: op[0] in fused)
        if kind in KIND_CLASSES
    }
    chosen: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, found in candidates.items():
            left = [c for c in found if c not in chosen.values()]
            if name not in chosen and len(left) == 1:
                chosen[name], changed = left[0], True
                break  # first come first served, in the order above
    return chosen


def _kind(raw: CanonicalGraph, layer: Any) -> str:
    """The file-level kind of a raw layer: ONNX Clip becomes max/min with scalar constants."""
    if layer.op in ("maximum", "minimum") and np.size(layer.params.get("const", [])) == 1:
        before = raw[layer.inputs[0]]
        scalar_max = before.op == "maximum" and np.size(before.params.get("const", [])) == 1
        return "" if layer.op == "minimum" and scalar_max else "clip"
    return layer.op


def _onnx_ops(path: str) -> list[tuple[str, str, int]]:
    import onnx

    model = onnx.load(path, load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return [
        (ONNX_KINDS[n.op_type], _onnx_name(n, weights), i)
        for i, n in enumerate(model.graph.node)
        if n.op_type in ONNX_KINDS
    ]


def _onnx_name(node: Any, weights: set[str]) -> str:
    """The node's name; for tf2onnx's generated ones (``Conv__10``) its weight's TF name,
    which holds the Keras layer's (``tiny_cnn_1/conv_1/convolution/merged_input``)."""
    name = node.name or node.output[0]
    if re.search(r"__\d+$", name):
        weight = next((i for i in node.input[1:] if i in weights), None)
        if weight:
            return weight.removeprefix("StatefulPartitionedCall/").removesuffix(":0")
    return name


def _tflite_ops(path: str) -> list[tuple[str, str, int]]:
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    op_names = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
        if kind in TFLITE_KINDS:
            out = graph.Tensors(int(op.OutputsAsNumpy()[0])).Name().decode()
            ops.append((TFLITE_KINDS[kind], out, i))
    return ops


def quant_evidence(
    info: dict[str, Any], path: str, index: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Target layer id -> the int8 tensor its weight came from (dynamic-range TFLite files)."""
    if not info.get("quant"):
        return {}
    from convdiff.ir import tflite_quant

    by_index = {i: lid for lid, i in index.items()}
    evidence = {}
    for tensor in tflite_quant.read(path).quantized:
        for consumer in tensor.consumers:
            lid = by_index.get(int(consumer.rpartition("#")[2]))
            if lid is not None:
                evidence[lid] = {
                    "tensor": tensor.name,
                    "dtype": tensor.dtype,
                    "scales": tensor.scales,
                }
    return evidence


# -- rendering -------------------------------------------------------------------------------


def summary(report: LocalizeReport) -> str:
    """The terminal summary: one line per finding, stage by stage."""
    lines = [
        f"localize {Path(report.source).name} ({report.src}) -> {Path(report.target).name} "
        f"({report.dst}): {len(report.faults)} finding(s), stages {', '.join(report.stages)}"
    ]
    for f in report.findings:
        where = ""  # the inputs and tools stages judge whole models, not layers
        if f.source_layer or f.target_layer:
            where = f" at {f.source_layer or '-'} -> {f.target_layer or '-'}"
        lines.append(f"  [{f.stage}] {f.kind}{where}: {f.summary}")
        if f.suggestion:
            lines.append(f"      fix: {f.suggestion}")
    for crash in report.crashes:
        lines.append(f"  stage {crash['stage']} crashed: {crash['message']}")
    lines += [f"  note: {note}" for note in report.notes]
    lines.append(f"report: {Path(report.out_dir) / 'report.md'}")
    return "\n".join(lines)


def to_markdown(report: LocalizeReport) -> str:
    out = [
        f"# convdiff localize: {Path(report.source).name} -> {Path(report.target).name}",
        "",
        f"- source: `{report.source}` ({report.src})",
        f"- target: `{report.target}` ({report.dst})",
        f"- stages: {', '.join(report.stages)}",
        f"- aligned layer pairs: {report.alignment.get('pairs')}, "
        f"unmatched layers: {report.alignment.get('unmatched')}",
    ]
    for side, info in report.imports.items():
        if info.get("route") or info.get("refused"):
            out.append(
                f"- {side} import: route {info.get('route')}; refused: {info.get('refused')}"
            )
    out += ["", "## Findings", ""]
    if not report.findings:
        out.append("No finding: the canonical graphs agree.")
    for stage in report.stages:
        found = [f for f in report.findings if f.stage == stage]
        if not found:
            continue
        out += [f"### {stage}", "", "| kind | source layer | target layer | what | fix |"]
        out.append("|---|---|---|---|---|")
        for f in found:
            cells = [f.kind, f.source_layer or "-", f.target_layer or "-", f.summary, f.suggestion]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    if report.suspects:
        out += ["## Suspicious layers", ""]
        out += [f"1. `{s['layer']}` ({', '.join(s['kinds'])})" for s in report.suspects]
        out.append("")
    out += _activations_markdown(report.runs.get("activations"))
    for crash in report.crashes:
        out.append(f"- stage {crash['stage']} crashed: {crash['message']}")
    out += [f"- note: {note}" for note in report.notes]
    return "\n".join(out) + "\n"


def _activations_markdown(act: dict[str, Any] | None) -> list[str]:
    """The graph stage's activation evidence: per aligned layer, its relative divergence."""
    if not act or not act.get("rows"):
        return []
    out = [
        "## Activations",
        "",
        f"Relative divergence max|a-b| / max|a| on {len(act['images'])} disagreeing image(s) "
        f"({', '.join(act['images'])}); tolerance {act['tolerance']:g}.",
        "",
        "| source layer | target layer | op | divergence | inputs' |",
        "|---|---|---|---|---|",
    ]
    for r in act["rows"]:
        div = "shape differs" if r["divergence"] is None else f"{r['divergence']:.3g}"
        before = "-" if r["input_divergence"] is None else f"{r['input_divergence']:.3g}"
        out.append(f"| {r['source']} | {r['target']} | {r['op']} | {div} | {before} |")
    return [*out, ""]


__all__ = ["LocalizeConfig", "LocalizeReport", "check_comparable", "localize", "summary"]
