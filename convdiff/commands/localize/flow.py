"""`convdiff localize`: find where and why a converted model departs from its source.

The orchestrator of one localization. It imports both model files into TVM Relax through the
worker pool (frameworks stay in workers; Keras/TF take one float converter first, see
:func:`.imports.import_via_pool`), canonicalizes and aligns the two layer graphs, runs the
selected stages (:mod:`convdiff.stages`) and writes ``report.json`` and ``report.md`` in the
output folder. A stage that crashes is recorded and the others still run. The inputs and tools
stages judge measurements, not graphs: :func:`.runs.measure_runs` runs both models
 on images (native runtimes and TVM, in workers) before the stages run. When it runs
them and the graph stage is selected, the same TVM runs (one compile per model) also return
the intermediate tensors of the aligned layers on the images whose top-1 labels disagree: the
graph stage's activation evidence (:mod:`convdiff.stages.activations`).

Findings name layers as the model files do (:mod:`convdiff.ir.names`); the terminal
summary and report.md are written by :mod:`convdiff.commands.localize.render`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import convdiff
from convdiff.commands.localize.from_files import weights_from_files
from convdiff.commands.localize.imports import import_via_pool, keras_route, layer_names
from convdiff.commands.localize.render import summary, to_markdown
from convdiff.commands.localize.runs import (
    RUN_STAGES,
    Inputs,
    activation_rows,
    chain_evidence,
    converter_hop,
    measure_runs,
    resolve_inputs,
    tvm_side,
)
from convdiff.commands.localize.types import GRAPH_STAGES, LocalizeConfig, LocalizeReport
from convdiff.core.errors import ConvdiffError, InputShapeError
from convdiff.core.jsonio import write_atomic
from convdiff.core.options import ImageOptions, PreprocessOptions, WorkerOptions, group_of
from convdiff.core.outdir import prepare_out_dir
from convdiff.core.progress import Progress
from convdiff.core.trust import trust_env
from convdiff.inputs.source import SourceSpec, resolve_source
from convdiff.ir import segments
from convdiff.ir.align import Alignment, align, squeezed
from convdiff.ir.canonicalize import canonicalize
from convdiff.ir.graph import CanonicalGraph
from convdiff.ir.names import WEIGHTED, quant_evidence
from convdiff.ir.segments import FunctionCheck
from convdiff.runtime.pool import WorkerPool
from convdiff.stages import StageContext, activations, stage_function
from convdiff.stages.findings import STAGES, Finding, ordered
from convdiff.stages.graph import activation_growth, rank
from convdiff.stages.weights import compare_param

# a segment after a weight that lost precision parts by up to a few percent of its scale
# (int8 per-tensor: ~1e-2 measured); beyond that something else differs too
LOSSY_TOLERANCE = 0.05


def localize(
    config: LocalizeConfig, progress: Progress | None = None, pool: WorkerPool | None = None
) -> LocalizeReport:
    """Localize the faults of ``config.target`` against ``config.source``; see the module doc.

    ``pool``: a running worker pool to reuse (tests share one); else one lives for this call.
    """
    for group in (ImageOptions, PreprocessOptions, WorkerOptions):
        group_of(group, config).check()
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
            env = trust_env(config.trust_model_code)
            pool = stack.enter_context(
                WorkerPool(out / "logs", timeout=config.timeout, extra_env=env)
            )
        try:
            job = _Job(report, config, pool, source, target, out, progress, chain)
            return _localize(job)
        except ConvdiffError:
            raise  # the user's input: its one line says it all
        except BaseException as exc:  # interrupted, or a bug: keep what was found
            report.partial = True
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped early"
            report.notes.append(f"{why}: {type(exc).__name__}: {exc}; the stages that ran are kept")
            _save(report, out)
            raise


@dataclass(frozen=True)
class _Job:
    """One localization's fixed context: what it compares, where it writes, its workers."""

    report: LocalizeReport
    config: LocalizeConfig
    pool: WorkerPool
    source: SourceSpec
    target: SourceSpec
    out: Path
    progress: Progress
    chain: dict[str, Any] | None  # the run report's hops, for the tools stage


def _localize(job: _Job) -> LocalizeReport:
    """The work of :func:`localize` once its folder, report and workers exist."""
    report, config, pool, progress = job.report, job.config, job.pool, job.progress
    source, target, out, chain = job.source, job.target, job.out, job.chain
    inputs = None  # the images' preprocessing: settled (or refused) before any TVM work
    if set(RUN_STAGES) & set(config.stages):
        with progress.step("loading both models"):
            inputs = resolve_inputs(pool, config, source, target)
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
        return _without_graphs(job, inputs)
    (raw_a, a, _), (raw_b, b, info_b) = graphs
    check_comparable(a, b, source.file.name, target.file.name)
    alignment = align(a, b)
    check_correspondence(a, b, alignment, source.file.name, target.file.name)
    evidence: dict[str, Any] = {}
    if set(RUN_STAGES) & set(config.stages):
        sides, cut = None, None
        if set(GRAPH_STAGES) & set(config.stages):
            matched = activations.pairs(StageContext(a, b, alignment))
            sides = (tvm_side(raw_a, a, matched, 0), tvm_side(raw_b, b, matched, 1))
            cut = segments.points(a, b, alignment)
        assert inputs is not None  # resolved above whenever RUN_STAGES are selected
        evidence = measure_runs(pool, config, source, target, out, progress, inputs, sides, cut)
        _attach_chain(evidence, chain, target.file)
        if "activations" in evidence:
            evidence["activations"] = activation_rows(evidence["activations"], a, b, alignment)
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
        # a Keras model's layers are named as Keras names them, on either side
        names_a, _ = layer_names(pool, raw_a, source.file)
        names_b, index_b = layer_names(pool, raw_b, target.file)
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
        _function_check(evidence, report),
    )
    if ctx.function is not None:
        ctx.function.relax(a, lossy_anchors(ctx), LOSSY_TOLERANCE)
        report.runs["function"] = {**report.runs["function"], **ctx.function.to_json()}
    _run_stages(report, report.stages, ctx, progress)
    report.context = ctx
    growth = activation_growth(ctx) if "graph" in report.stages else []
    report.suspects = rank(report.findings, growth)
    _save(report, out)
    return report


def lossy_anchors(ctx: StageContext) -> list[str]:
    """The source anchors whose target weight lost precision (int8, float16, bfloat16), and
    the aligned layers whose constant operand did (a full-integer file's int8 rescaling, too
    small to be an anchor): the segments after them may part by that loss, which the weights
    stage reports."""
    lossy = []
    anchors = {(anchor.a, anchor.b) for anchor in ctx.alignment.anchors}
    for pair in ctx.alignment.pairs:
        la, lb = ctx.a[pair.a], ctx.b[pair.b]
        names = ("weight", "const") if (pair.a, pair.b) in anchors else ("const",)
        for name in names:
            if name in la.params and name in lb.params:
                found = compare_param(ctx, la, lb, name)
                if found is not None and found.kind == "precision":
                    lossy.append(la.id)
                    break
    return lossy


def _function_check(evidence: dict[str, Any], report: LocalizeReport) -> FunctionCheck | None:
    """The segments' check when it ran (a failed one is a note: the stages then report every
    difference, as without runs)."""
    found = evidence.get("function")
    if not found:
        return None
    if "error" in found:
        report.notes.append(f"function check: {found['error']}; every difference is reported")
        return None
    return FunctionCheck.from_json(found)


def _without_graphs(job: _Job, inputs: Inputs | None) -> LocalizeReport:
    """A model TVM cannot import: the stages that judge runs, not graphs (inputs, tools) still
    run, and the weights stage on the tensors of both files (:mod:`.from_files`); the others
    are reported as not run, with TVM's refusal (``report.error``, exit 2)."""
    report, config, pool, progress = job.report, job.config, job.pool, job.progress
    source, target, out, chain = job.source, job.target, job.out, job.chain
    refused = report.error.split(":")[0]
    from_files: list[Finding] = []
    for stage in report.stages:
        if stage == "weights":  # the files hold the weights: the stage needs no graph
            with progress.step("stage weights (tensors read from the model files)"):
                from_files, how = weights_from_files(pool, source, target, out / "ir" / "files")
            report.notes.append(
                f"weights: read from the model files because {refused}; hyperparams and "
                f"graph were not run ({how})"
            )
        elif stage in GRAPH_STAGES:
            report.notes.append(f"{stage}: not run ({refused})")
    wanted = [s for s in report.stages if s in RUN_STAGES]
    if wanted:
        assert inputs is not None  # resolved whenever RUN_STAGES are selected
        report.runs = measure_runs(pool, config, source, target, out, progress, inputs)
        _attach_chain(report.runs, chain, target.file)
        ctx = StageContext(CanonicalGraph([], [], []), CanonicalGraph([], [], []), Alignment())
        ctx.evidence = report.runs
        _run_stages(report, wanted, ctx, progress)
    report.findings = ordered([*report.findings, *from_files])
    _save(report, out)
    return report


def _attach_chain(evidence: dict[str, Any], chain: dict[str, Any] | None, target: Path) -> None:
    """The tools stage reads the run report's hops and the hop that wrote the target."""
    if "tools" in evidence:
        evidence["tools"]["run_report"] = chain
        evidence["tools"]["converter"] = converter_hop(chain, target)


def _run_stages(
    report: LocalizeReport, stages: list[str], ctx: StageContext, progress: Progress
) -> None:
    """Run ``stages`` in order into ``report.findings``; a stage that raises (a bug or an
    unforeseen graph) is recorded in ``report.crashes`` and the others still run."""
    findings: list[Finding] = []
    for stage in stages:
        with progress.step(f"stage {stage}"):
            try:
                findings.extend(stage_function(stage)(ctx))
            except Exception as exc:
                report.crashes.append({"stage": stage, "message": f"{type(exc).__name__}: {exc}"})
    report.findings = ordered(findings)


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


def check_correspondence(
    a: CanonicalGraph, b: CanonicalGraph, alignment: Alignment, name_a: str, name_b: str
) -> None:
    """Refuse two models of the same interface that are not one model and its conversion: at
    least half of the source's weighted layers (conv, dense) must pair with a target layer
    holding as many weights. A conversion moves weights into other layouts and precisions,
    never to other sizes; two unrelated networks give findings that mean nothing."""
    weighted = [lay for lay in a.layers if lay.op in WEIGHTED and "weight" in lay.params]
    if not weighted:
        return
    anchored = 0
    for layer in weighted:
        other = alignment.b_of(layer.id)
        theirs = b[other].params.get("weight") if other is not None else None
        anchored += theirs is not None and np.size(theirs) == np.size(layer.params["weight"])
    if anchored * 2 < len(weighted):
        raise ConvdiffError(
            f"{name_b} is not a conversion of {name_a}: {anchored} of the {len(weighted)} "
            f"weighted layers of {name_a} have a counterpart of the same size in {name_b}",
            "localize compares a model with its conversion: give the model it was converted from",
        )


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join("x".join(str(d) for d in s) for s in shapes)


def _save(report: LocalizeReport, out: Path) -> None:
    """report.json and its rendering, report.md."""
    report.write(out / "report.json")
    write_atomic(out / "report.md", to_markdown(report))


__all__ = ["LocalizeConfig", "LocalizeReport", "check_comparable", "localize", "summary"]
