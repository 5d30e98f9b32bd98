"""`convdiff run`: convert a model along a chain, run every artifact on the same images, compare.

The orchestrator of one run. It only sequences the shared pipeline pieces and fills the
report; the work happens in workers. The report is written at the start (``partial: true``),
after each hop, and at the end, so an interrupted or crashed run leaves what it found. What
comes after a run (``--localize``, ``--repair``) is not its business: a caller hands it as
``then``, to run on the same workers (:mod:`convdiff.commands.followup`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

import convdiff
from convdiff.commands.run.checks import check_run_config
from convdiff.commands.run.pipeline import Workspace, build_zoo_source, convert_hop, probe
from convdiff.commands.run.render import write_markdown
from convdiff.commands.run.streaming import Fed, stream_chain
from convdiff.commands.run.types import Artifact, Crash, Hop, Phase, RunConfig, RunReport
from convdiff.converters import CALIBRATION_IMAGES, ConverterInfo, find_chain
from convdiff.core import envs
from convdiff.core.cache import ArtifactCache, default_cache_dir, file_digest, key_of
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import ImageOptions, PreprocessOptions, group_of
from convdiff.core.outdir import own_dir, prepare_out_dir, remove_own_dir
from convdiff.core.progress import Progress
from convdiff.core.trust import trust_env
from convdiff.frameworks import framework
from convdiff.inputs import data as datasets
from convdiff.inputs import preprocess
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.inputs.source import SourceSpec, resolve_source
from convdiff.inputs.spec import check_classifier, concrete_shape, resolve_spec
from convdiff.metrics import PairMetrics
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool

AfterRun = Callable[[RunReport, WorkerPool, Progress], None]
STREAM_REVISION = 1  # bump when what the inference pass records changes


def run(
    config: RunConfig,
    progress: Progress | None = None,
    then: AfterRun | None = None,
    pool: WorkerPool | None = None,
) -> RunReport:
    """Run one conversion check end to end and return its report (also written to disk).

    ``then(report, pool, progress)`` runs after the report is final, on the same workers.
    ``pool``: running workers to use (and leave running), e.g. one for many runs; else a pool
    lives for this run, with the environment ``config`` asks for."""
    source = resolve_source(config.model, config.src)
    chain = find_chain(source.framework, config.dst, config.via, config.convert)
    check_run_config(config, source, chain)
    stem = source.name.replace(":", "-")  # timm:resnet18 -> timm-resnet18, a plain folder name
    out = prepare_out_dir(config.out, f"{stem}-{source.framework}-{config.dst}")
    progress = progress or Progress()
    progress.total = 2 + len(chain) + len({edge.env for edge in chain if edge.env})
    report = RunReport(
        model=source.name,
        src=source.framework,
        dst=config.dst,
        convdiff_version=convdiff.__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        out_dir=str(out),
        max_discrepancy=config.max_discrepancy,
        route=[source.framework, *(edge.dst for edge in chain)],
    )
    report.write(out / "report.json")  # from its first moment the folder's report is this run's
    cache = ArtifactCache(config.cache_dir or default_cache_dir(), enabled=config.use_cache)
    records = _prepare(config, cache, report, out)
    env = trust_env(config.trust_model_code)
    own = WorkerPool(out / "logs", timeout=config.timeout, extra_env=env) if pool is None else None
    with own or contextlib.nullcontext(pool) as pool:
        _prestart(pool, [source.framework, *(edge.dst for edge in chain)])
        ws = Workspace(out, pool, cache, progress)
        try:
            _run_chain(ws, config, source, chain, records, report)
        except ConvdiffError as exc:  # the user's input, found while running
            report.error = str(exc)
            raise
        except BaseException as exc:  # keep what was found, say why the run stopped
            report.notes.append(f"run stopped early: {type(exc).__name__}: {exc}".strip())
            raise
        finally:
            report.timings = dict(ws.timings)
            if pool.warm_up_seconds:  # framework imports done by prestarted workers
                imports = sum(pool.warm_up_seconds.values())
                report.timings["startup"] = Phase(imports, imports, 0.0)
            report.notes += cache.notes
            _finish(report, out)
            remove_own_dir(out / "scratch")  # artifacts/ holds the results
        if then is not None:
            then(report, pool, progress)
    return report


def _prepare(
    config: RunConfig, cache: ArtifactCache, report: RunReport, out: Path
) -> list[datasets.ImageRecord]:
    """The images, a usable cache and a scratch folder, or the user's error: then the report
    says so (status error, the message) before it is raised."""
    try:
        records = _load_data(config)
        cache.check_writable()
        own_dir(out / "scratch")
    except ConvdiffError as exc:
        report.error, report.status = str(exc), "error"
        report.write(out / "report.json")
        raise
    report.data = records.summary()
    report.notes += records.notes
    report.write(out / "report.json")
    return records.records


def _prestart(pool: WorkerPool, frameworks: list[str]) -> None:
    """Start each runtime's worker at once: their imports overlap with each other and with
    the image preparation instead of adding up (TensorFlow alone takes seconds)."""
    for name in dict.fromkeys(frameworks):
        client.warm_up(pool, name)


def _load_data(config: RunConfig) -> datasets.ImageList:
    return datasets.load_images(**asdict(group_of(ImageOptions, config)))


def _run_chain(
    ws: Workspace,
    config: RunConfig,
    source: SourceSpec,
    chain: list,
    records: list[datasets.ImageRecord],
    report: RunReport,
) -> None:
    """Convert every hop, then stream the images through the source and every artifact."""
    environments = _tool_envs(ws, chain)
    artifact, key, spec = _source_artifact(ws, config, source, report)
    if artifact is None:
        return
    specs = {"source": spec}
    preprocessing: dict = {**spec.to_dict(), "description": spec.describe()}
    if config.target_preprocess == "target":
        target, origin = target_spec(source, config.dst, spec)
        specs["target"] = target
        preprocessing["target"] = {**target.to_dict(), "description": target.describe()}
        preprocessing["target"]["origin"] = origin
    # through JSON once, so the report in memory equals the one read back from disk
    report.preprocessing = json.loads(json.dumps(preprocessing))
    # the converters get the shape the images have where the model leaves it open
    artifact = replace(artifact, input_shape=concrete_shape(artifact.input_shape, spec))
    report.source = artifact
    report.write(ws.out / "report.json")
    calibration = _calibration(ws, config, chain, spec, records)
    fed = [Fed(0, artifact, "source", spec.layout)]
    keys = [key]
    for index, edge in enumerate(chain, start=1):
        with ws.progress.step(f"converting {edge.src} -> {edge.dst} with {edge.tool}") as step:
            converted, key, seconds, crash = convert_hop(
                ws, edge, index, artifact, key, config.convert, calibration
            )
            step.result = "cached" if converted is not None and converted.cached else "done"
        hop = Hop(
            index,
            edge.src,
            edge.dst,
            edge.tool,
            edge.tool_version(),
            config.convert.as_dict(edge.options),
            converted,
            seconds,
            converter=edge.name,
            environment=environments.get(edge.env),
            crash=crash,
        )
        report.chain.append(hop)
        report.write(ws.out / "report.json")
        if crash is not None or converted is None:
            report.crashes.append(crash)  # type: ignore[arg-type]
            break
        feed = "target" if index == len(chain) and "target" in specs else "source"
        fed.append(Fed(index, converted, feed))
        keys.append(key)
        artifact = converted
    _stream(ws, config, fed, keys, records, specs, report)


def _stream(
    ws: Workspace,
    config: RunConfig,
    fed: list[Fed],
    keys: list[str],
    records: list[datasets.ImageRecord],
    specs: dict[str, PreprocessSpec],
    report: RunReport,
) -> None:
    """The inference pass over every converted model; fills each hop's agreement or crash."""
    frameworks = " -> ".join(f.artifact.framework for f in fed)
    run_key = key_of(
        "stream",
        STREAM_REVISION,
        keys,
        [f.feed for f in fed],
        [framework(f.artifact.framework).version() for f in fed],  # the runtimes that ran
        {name: spec.to_dict() for name, spec in specs.items()},
        [(r.name, r.path, r.accepted) for r in records],
        config.batch_size,
    )
    with ws.progress.step(f"running {len(records):,} images through {frameworks}"):
        result = stream_chain(
            ws,
            fed,
            records,
            specs,
            key=run_key,
            batch_size=config.stream_batch,
            infer_batch=config.batch_size,
            keep_inputs=config.keep_inputs,
            keep_outputs=config.keep_outputs,
        )
    report.stream = result.info
    for hop, listed in result.info.get("listed", {}).items():
        report.notes.append(
            f"hop {hop}: the report lists the first {listed} disagreeing images; every image's"
            f" labels are in outputs/{hop}-<framework>.npy"
        )
    resumed, batches = result.info.get("resumed_at_batch"), result.info["batches"]
    if resumed and resumed > batches:
        report.notes.append(
            f"all {batches} batches were done by an earlier run with this folder, models and "
            "images: its records were read, nothing was run again"
        )
    elif resumed:
        report.notes.append(
            f"resumed at batch {resumed} of {batches}: the batches before it were done by an "
            "earlier, interrupted run"
        )
    if 0 in result.artifacts and report.source is not None:
        done = result.artifacts[0]
        report.source = replace(done, input_shape=report.source.input_shape)
    if 0 in result.crashes:
        report.crashes.insert(0, result.crashes[0])
    for position, hop in enumerate(report.chain):
        if hop.crash is not None:
            continue
        crash = result.crashes.get(hop.index)
        if crash is not None:
            report.crashes.append(crash)
        report.chain[position] = replace(
            hop,
            artifact=result.artifacts.get(hop.index, hop.artifact),
            agreement=result.agreements.get(hop.index),
            crash=crash,
        )


def _calibration(
    ws: Workspace,
    config: RunConfig,
    chain: list[ConverterInfo],
    spec: PreprocessSpec,
    records: list[datasets.ImageRecord],
) -> tuple[Path, str] | None:
    """The first images of the run, preprocessed for the source, for a converter that
    calibrates (full-integer TFLite, static ONNX quantization); None when none does."""
    if not any(edge.needs_calibration(config.convert) for edge in chain):
        return None
    chosen = records[:CALIBRATION_IMAGES]
    path = ws.out / "scratch" / "calibration-run.npz"
    with ws.timed("prepare"):
        _save_inputs(path, spec, chosen)
    return path, key_of(spec.to_dict(), [r.name for r in chosen])


def _tool_envs(ws: Workspace, chain: list[ConverterInfo]) -> dict[str, dict[str, Any]]:
    """Build (first use) or find the tool environment of every hop that needs one, before
    any work: a release pip cannot install is the user's error, said at once."""
    found: dict[str, dict[str, Any]] = {}
    for edge in chain:
        if not edge.env or edge.env in found:
            continue
        with ws.progress.step(f"tool environment {edge.env}") as step:
            existing = envs.find_env(edge.env)
            env = existing or envs.ensure_env(edge.env, on_tick=ws.progress.tick)
            step.result = "ready" if existing else "built"
        found[edge.env] = env.to_dict()
    return found


def _source_artifact(
    ws: Workspace, config: RunConfig, source: SourceSpec, report: RunReport
) -> tuple[Artifact | None, str, PreprocessSpec]:
    """Build the zoo model or take the user's file, load it to read its input shape (which
    the converters need), and settle the preprocessing for it."""
    if source.file is not None:
        artifact = Artifact(framework=source.framework, path=str(source.file.resolve()))
        with ws.progress.step(f"loading {source.file.name}"):
            description, crash = probe(ws, artifact, 0)
        report.weights = {"policy": "file", "weights": "file", "detail": str(source.file)}
        if crash is not None:
            raise _load_error(source, crash, config.timeout)
        spec = _file_spec(config, source.framework, description or {})
        artifact = replace(artifact, input_shape=_shape(description))
        return artifact, key_of("file", file_digest(source.file)), spec
    from convdiff.zoo import weights_plan, zoo_model

    spec = zoo_model(source.name).variant(source.framework).preprocess
    plan = weights_plan(source.name, source.framework, config.weights)
    weights = str(plan.path) if plan.policy == "file" else plan.policy
    calibration_set = datasets.sample_set()

    def calibration() -> Path:
        """Preprocessed calibration images, made only when the build is not cached."""
        path = ws.out / "inputs" / "calibration.npz"
        with ws.timed("prepare"):
            _save_inputs(path, spec, calibration_set)
        return path

    calibration_key = key_of(spec.to_dict(), [r.name for r in calibration_set])
    if plan.policy == "file" and plan.path is not None:
        calibration_key = key_of(calibration_key, file_digest(plan.path))
    label = f"building {source.name} for {source.framework} ({plan.policy} weights)"
    with ws.progress.step(label) as step:
        artifact, weights_info, key, crash = build_zoo_source(
            ws, source.name, source.framework, weights, config.seed, calibration, calibration_key
        )
        step.result = "cached" if artifact is not None and artifact.cached else "done"
        if artifact is not None and crash is None:
            description, crash = probe(ws, artifact, 0)
            artifact = replace(artifact, input_shape=_shape(description))
    report.weights = {"policy": config.weights, **weights_info}
    if config.weights == "auto" and plan.policy == "random":
        report.notes.append(f"weights: {plan.note} (seed {config.seed})")
    if crash is not None:
        report.crashes.append(crash)
        return None, key, spec
    return artifact, key, spec


def _shape(description: dict[str, Any] | None) -> tuple[int | None, ...]:
    return tuple((description or {}).get("input_shape") or ())


def _load_error(source: SourceSpec, crash: Crash, timeout: float) -> ConvdiffError:
    """Why the user's model file did not load, blaming the file only when the file is why."""
    title = framework(source.framework).title
    name = source.file.name if source.file else source.name
    if crash.failure == "timeout":
        return ConvdiffError(
            f"loading {name} in {title} took longer than the timeout ({timeout:g} s)",
            "pass a larger --timeout",
        )
    if crash.failure == "memory":
        return ConvdiffError(
            f"loading {name} in {title} took more memory than the limit ({crash.message})",
            "run on a machine with more memory",
        )
    return ConvdiffError(
        f"cannot load {name} as a {title} model: {crash.message}",
        f"check that it is a complete {title} model file (tool output: {crash.log})",
    )


def target_spec(source: SourceSpec, dst: str, spec: PreprocessSpec) -> tuple[PreprocessSpec, str]:
    """The target framework's customary preprocessing (``target_preprocess="target"``) and
    where it comes from.

    A zoo model has a spec per framework it is offered in; a TFLite model is customarily made
    from Keras and fed like it; for anything else (onnx, a user's model file) nothing customary
    is known, so the target keeps the source's spec.
    """
    if source.file is None:
        from convdiff.zoo import zoo_model

        variants = zoo_model(source.name).variants
        fw = "keras" if dst == "tflite" and dst not in variants else dst
        if fw in variants:
            return variants[fw].preprocess, f"the zoo's {source.name} {fw} spec"
    return spec, f"the source's (no customary {dst} spec known for {source.name})"


def _file_spec(config: RunConfig, fw: str, description: dict) -> PreprocessSpec:
    """Preprocessing for a user's model file: the options, filled in from its input shape."""
    check_classifier(description, Path(config.model).name)
    shape = list(description.get("input_shape") or [])
    return resolve_spec(fw, shape, group_of(PreprocessOptions, config))


def _save_inputs(path: Path, spec: PreprocessSpec, records: list[datasets.ImageRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=preprocess.batch(spec, records))


def _finish(report: RunReport, out: Path) -> None:
    """Fill the headline numbers from the last hop that ran, set the status, write files."""
    finished = [h for h in report.chain if h.agreement is not None]
    if finished:
        last: PairMetrics = finished[-1].agreement  # type: ignore[assignment]
        report.images = last.images
        report.top1_discrepancy = last.top1_discrepancy
        report.top5_discrepancy = last.top5_discrepancy
        report.kendall_tau_top5 = last.kendall_tau_top5
        report.max_abs_diff = last.max_abs_diff
        report.mean_abs_diff = last.mean_abs_diff
        report.src_accuracy = last.src_accuracy
        report.dst_accuracy = last.dst_accuracy
        report.disagreeing = [
            {"image": d.image, "src_label": d.src_label, "dst_label": d.dst_label}
            for d in last.disagreeing
        ]
        if last.class_note:
            report.notes.append(last.class_note)
        report.first_disagreeing_hop = next(
            (h.index for h in finished if h.agreement and h.agreement.top1_discrepancy > 0), None
        )
    complete = len(finished) == len(report.route) - 1
    if report.error:
        report.status = "error"
    elif report.crashes:
        report.status = "crash"
    elif not complete:
        report.status = "incomplete"
    elif report.top1_discrepancy is not None and report.top1_discrepancy > report.max_discrepancy:
        report.status = "discrepancy"
    else:
        report.status = "ok"
    report.partial = not complete
    report.write(out / "report.json")
    write_markdown(report, out / "report.md")


__all__ = ["AfterRun", "run", "target_spec"]
