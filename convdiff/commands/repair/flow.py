"""`convdiff repair`: localize, plan a patch, verify it, write the repaired model.

The orchestrator of one repair, in one worker pool: :func:`convdiff.commands.localize.flow.localize`
(all stages: its native runs of both models are the "before" of the repair), :func:`.plan.plan`,
:func:`.verify.verify` (one inference pass of the target per tried group), then the verified edits
written to the output file and saved as ``patch.json`` + ``patch.npz`` for review and for `convdiff
patch apply`. Output folder: ``localize/`` (the localization), ``steps/`` (each tried file),
``patch.json``/``.npz``, ``repair.json`` and ``repair.md``."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import convdiff
from convdiff.commands.localize.flow import localize
from convdiff.commands.repair.render import to_markdown
from convdiff.commands.repair.types import RepairConfig, RepairReport
from convdiff.core.errors import ConvdiffError
from convdiff.core.jsonio import write_atomic
from convdiff.core.outdir import prepare_out_dir
from convdiff.core.progress import Progress
from convdiff.core.trust import trust_env
from convdiff.frameworks import framework
from convdiff.inputs.source import resolve_source
from convdiff.repair.appliers.apply import apply_edits, check_output
from convdiff.repair.fallback import FallbackContext, FallbackResult, format_module, search
from convdiff.repair.patch import FORMATS, diff_view
from convdiff.repair.plan import plan
from convdiff.repair.verify import Agreement, agreement, to_json, verify
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from convdiff.stages.findings import STAGES
from convdiff.stages.ranking import best_finding_line


def repair(
    config: RepairConfig, progress: Progress | None = None, pool: WorkerPool | None = None
) -> RepairReport:
    """Repair ``config.localize.target`` against its source; see the module docstring."""
    started = dt.datetime.now(dt.UTC)
    progress = progress or Progress()
    target = resolve_source(config.localize.target, config.localize.dst)
    fmt = target.framework
    if fmt not in FORMATS:  # a SavedModel: TF functions, no layers a patch could name
        raise ConvdiffError(
            f"repair writes {', '.join(FORMATS[:-1])} and {FORMATS[-1]} models; "
            f"{target.file.name} is a {framework(fmt).title} model, a graph of TF ops with no "
            "layers to edit",
            "repair the Keras model it was exported from, or the onnx/tflite hop of its chain",
        )
    source = resolve_source(config.localize.source, config.localize.src)
    check_output(fmt, target.file, config.output, *([source.file] if source.file else []))
    out = prepare_out_dir(config.out, f"repair-{target.name}")
    report = RepairReport(
        source=str(Path(config.localize.source).resolve()),
        target=str(target.file.resolve()),
        output=str(config.output.resolve()),
        out_dir=str(out),
        convdiff_version=convdiff.__version__,
        created=started.isoformat(timespec="seconds"),
    )
    localize_config = replace(config.localize, stages=STAGES, out=out / "localize")
    with contextlib.ExitStack() as stack:
        if pool is None:
            env = trust_env(localize_config.trust_model_code)
            pool = stack.enter_context(
                WorkerPool(out / "logs", timeout=localize_config.timeout, extra_env=env)
            )
        found = localize(localize_config, progress, pool)
        if found.error:
            raise ConvdiffError(found.error, "see localize/report.json for the stages that ran")
        report.findings = {s: n for s in STAGES if (n := sum(f.stage == s for f in found.faults))}
        report.top = best_finding_line(found.faults)
        runs = found.run_files
        if not runs.outputs("target").exists():
            raise ConvdiffError(
                f"the target could not be run on the images: {_run_error(found.runs)}",
                "repair needs both models to run; see localize/report.json",
            )
        report.passes = {  # native: over every image; tvm: one compile, a few images each
            "native": 3 if runs.outputs("target-own").exists() else 2,
            "tvm": runs.tvm_runs(),
        }
        fallback_ctx = FallbackContext(
            source=Path(report.source),
            source_framework=source.framework,
            target=target.file,
            images=runs.x_source,
            pool=pool,
            work=out / "fallback",
            findings=found.findings,
            layout=str(found.runs.get("source", {}).get("layout") or "NHWC"),
            stage_context=found.context,
        )
        fallback_fmt = format_module(fmt)
        quantized = fallback_fmt.quantized_layers(fallback_ctx) if fallback_fmt else 0
        # a quantized target's precision findings are what the float fallback weighs: patching
        # them would restore every layer's float weights
        findings = [f for f in found.findings if not (quantized and f.kind == "precision")]
        with progress.step("planning the patch"):
            patch = plan(found.context, findings, Path(report.source), target.file, fmt, pool)
        y_src = _outputs(runs.outputs("source"))
        names = [f"image-{i}" for i in range(len(y_src))]  # metrics only: no listing
        before = agreement(y_src, _outputs(runs.outputs("target")), names)
        model_edits = [e for e in patch.edits if e.action != "preprocessing"]
        preprocessing = [e for e in patch.edits if e.action == "preprocessing"]

        def run_target(path: Path) -> np.ndarray:
            with progress.step(f"running the patched target ({path.name})"):
                return _infer(pool, fmt, path, runs.x_source, localize_config.batch_size)

        result = verify(
            fmt,
            target.file,
            model_edits,
            patch.tensors,
            before,
            run_target,
            lambda y: agreement(y_src, y, names),
            out / "steps",
            pool,
        )
        if result.kept:
            apply_edits(
                fmt, target.file, [*result.kept, *preprocessing], patch.tensors, config.output, pool
            )
        if quantized:
            assert fallback_fmt is not None
            if result.kept:  # the fallback starts from the patched file
                fallback_ctx.target = Path(result.final_file)
            fallback = _fall_back(
                fallback_ctx,
                fallback_fmt,
                fmt,
                result.after,
                y_src,
                localize_config.batch_size,
                progress,
            )
            fallback.size_before = target.file.stat().st_size
            if fallback.layers:
                shutil.copyfile(fallback.final_file, config.output)
            report.fallback = fallback.to_json()
            report.passes["native"] += fallback.passes
    report.passes["native"] += result.passes
    verified = replace(
        patch,
        edits=[*result.kept, *(e for e in patch.edits if e.action == "preprocessing")],
        tensors={k: v for k, v in patch.tensors.items() if any(e.value == k for e in result.kept)},
        notes=patch.notes
        + [f"dropped by the verify loop: {e.layer}.{e.field}" for e in result.dropped],
    )
    report.patch = str(verified.save(out / "patch.json"))
    report.edits = diff_view(verified, verified.tensors).splitlines()
    report.verify = to_json(result)
    report.notes = list(verified.notes)
    report.status = _status(result, bool(found.faults), report.fallback)
    report.seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    report.write(out / "repair.json")
    write_atomic(out / "repair.md", to_markdown(report))
    return report


def _status(result: Any, had_faults: bool, fallback: dict[str, Any]) -> str:
    if fallback:  # a quantized target: its labels are what the fallback brings back
        if fallback["top1_before"] == 0 and not result.kept:
            return "nothing_to_repair"
        if fallback["float_layers"]:
            return "repaired" if fallback["top1_after"] == 0 else "improved"
    if not had_faults and result.before.agrees:
        return "nothing_to_repair"
    if not result.kept:
        return "unchanged"
    return "repaired" if result.after.agrees else "improved"


def _fall_back(
    ctx: FallbackContext,
    module: Any,
    fmt: str,
    before: Agreement,
    y_src: np.ndarray,
    batch_size: int,
    progress: Progress,
) -> FallbackResult:
    """Search the fewest layers to run in float (:mod:`convdiff.repair.fallback`)."""
    names = [f"image-{i}" for i in range(len(y_src))]

    def run(path: Path) -> np.ndarray:
        return _infer(ctx.pool, fmt, path, ctx.images, batch_size)

    def measure(y: np.ndarray) -> Agreement:
        return agreement(y_src, y, names)

    return search(ctx, module, before, run, measure, progress.step)


def _infer(pool: WorkerPool, fmt: str, path: Path, inputs: Path, batch_size: int) -> np.ndarray:
    outputs = path.with_suffix(".outputs.npy")
    outcome = client.infer(pool, fmt, path, inputs, outputs, batch_size=batch_size)
    if not outcome:  # a patched file the runtime refuses: worse than anything, never kept
        return np.full((1, 1), np.nan, dtype=np.float32)
    return _outputs(outputs)


def _outputs(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")  # read as compared: it can be large


def _run_error(runs: dict[str, Any]) -> str:
    for item in runs.values():
        if isinstance(item, dict) and item.get("error"):
            return str(item["error"])
    return "unknown error"


__all__ = ["RepairConfig", "RepairReport", "repair"]
