"""`convdiff repair`: localize, plan a patch, verify it, write the repaired model.

The orchestrator of one repair, in one worker pool: :func:`convdiff.localize.localize` (all
stages: its native runs of both models are the "before" of the repair), :func:`.plan.plan`,
:func:`.verify.verify` (one inference pass of the target per tried group), then the verified
edits written to the output file and saved as ``patch.json`` + ``patch.npz`` for review and for
`convdiff patch apply`. Output folder: ``localize/`` (the localization), ``steps/`` (each tried
file), ``patch.json``/``.npz``, ``repair.json`` and ``repair.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import convdiff
from convdiff.errors import ConvdiffError
from convdiff.frameworks import framework
from convdiff.localize import LocalizeConfig, localize
from convdiff.progress import Progress
from convdiff.repair.apply import apply_edits, check_output
from convdiff.repair.patch import FORMATS, diff_view
from convdiff.repair.plan import plan
from convdiff.repair.verify import agreement, to_json, verify
from convdiff.report import write_atomic
from convdiff.source import resolve_source
from convdiff.stages.findings import STAGES
from convdiff.top_finding import best_finding_line
from convdiff.workers import WorkerPool


@dataclass(frozen=True)
class RepairConfig:
    """One `convdiff repair`: the localization to run (its ``out`` is set here) and where the
    repaired model goes."""

    localize: LocalizeConfig
    output: Path  # the repaired model file (never the target itself)
    out: Path | None = None  # work folder; None = ./convdiff-runs/repair-<target>-<time>


@dataclass
class RepairReport:
    source: str
    target: str
    output: str
    out_dir: str
    status: str = "unchanged"  # repaired | improved | unchanged | nothing_to_repair
    schema_version: int = 1
    convdiff_version: str = ""
    created: str = ""
    findings: dict[str, int] = field(default_factory=dict)  # localized faults per stage
    top: str = ""  # the top localized finding, one line
    patch: str = ""
    edits: list[str] = field(default_factory=list)  # the diff view of the verified patch
    verify: dict[str, Any] = field(default_factory=dict)  # before, after, steps, passes
    passes: dict[str, int] = field(default_factory=dict)  # inference passes over the images
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 the target agrees with the source (repaired, or already), 1 a discrepancy
        remains."""
        return 0 if self.verify.get("after", {}).get("agrees") else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def repair(
    config: RepairConfig, progress: Progress | None = None, pool: WorkerPool | None = None
) -> RepairReport:
    """Repair ``config.localize.target`` against its source; see the module docstring."""
    from convdiff.run import prepare_out_dir

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
    check_output(fmt, target.file, config.output)
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
            pool = stack.enter_context(WorkerPool(out / "logs", timeout=localize_config.timeout))
        found = localize(localize_config, progress, pool)
        if found.error:
            raise ConvdiffError(found.error, "see localize/report.json for the stages that ran")
        report.findings = {s: n for s in STAGES if (n := sum(f.stage == s for f in found.faults))}
        report.top = best_finding_line(found.faults)
        runs = out / "localize" / "runs"
        if not (runs / "y-target.npz").exists():
            raise ConvdiffError(
                f"the target could not be run on the images: {_run_error(found.runs)}",
                "repair needs both models to run; see localize/report.json",
            )
        report.passes = {  # native: over every image; tvm: one compile, a few images each
            "native": 3 if (runs / "y-target-own.npz").exists() else 2,
            "tvm": len(list(runs.glob("y-*-tvm.npz"))),
        }
        with progress.step("planning the patch"):
            patch = plan(found.context, found.findings, Path(report.source), target.file, fmt, pool)
        y_src = _outputs(runs / "y-source.npz")
        names = [f"image-{i}" for i in range(len(y_src))]  # metrics only: no listing
        before = agreement(y_src, _outputs(runs / "y-target.npz"), names)
        model_edits = [e for e in patch.edits if e.action != "preprocessing"]
        preprocessing = [e for e in patch.edits if e.action == "preprocessing"]

        def run_target(path: Path) -> np.ndarray:
            with progress.step(f"running the patched target ({path.name})"):
                return _infer(pool, fmt, path, runs / "x-source.npz", localize_config.batch_size)

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
    report.status = _status(result, bool(found.faults))
    report.seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    write_atomic(out / "repair.json", json.dumps(report.to_dict(), indent=2) + "\n")
    write_atomic(out / "repair.md", to_markdown(report))
    return report


def _status(result: Any, had_faults: bool) -> str:
    if not had_faults and result.before.agrees:
        return "nothing_to_repair"
    if not result.kept:
        return "unchanged"
    return "repaired" if result.after.agrees else "improved"


def _infer(pool: WorkerPool, fmt: str, path: Path, inputs: Path, batch_size: int) -> np.ndarray:
    info = framework(fmt)
    outputs = path.with_suffix(".outputs.npz")
    outcome = pool.call(
        info.worker,
        "convdiff.tasks:infer",
        framework=info.name,
        path=str(path),
        inputs=str(inputs),
        outputs=str(outputs),
        batch_size=batch_size,
    )
    if not outcome:  # a patched file the runtime refuses: worse than anything, never kept
        return np.full((1, 1), np.nan, dtype=np.float32)
    return _outputs(outputs)


def _outputs(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["y"]


def _run_error(runs: dict[str, Any]) -> str:
    for item in runs.values():
        if isinstance(item, dict) and item.get("error"):
            return str(item["error"])
    return "unknown error"


def summary(report: RepairReport) -> str:
    before, after = report.verify.get("before", {}), report.verify.get("after", {})
    lines = [
        f"convdiff repair {Path(report.target).name} against {Path(report.source).name}: "
        f"{report.status}",
        f"localized: {', '.join(f'{n} {s}' for s, n in report.findings.items()) or 'no finding'}",
        f"before: top-1 discrepancy {before.get('top1_discrepancy')}%, max |diff| "
        f"{before.get('max_abs_diff', 0):.3g}",
    ]
    for step in report.verify.get("steps", []):
        mark = "kept" if step["kept"] else "dropped"
        lines.append(
            f"  {step['stage']}: {len(step['edits'])} edit(s) -> top-1 "
            f"{step['top1_discrepancy']}%, max |diff| {step['max_abs_diff']:.3g} ({mark})"
        )
    lines.append(
        f"after: top-1 discrepancy {after.get('top1_discrepancy')}%, max |diff| "
        f"{after.get('max_abs_diff', 0):.3g}; {report.passes.get('native', 0)} native inference "
        "passes over the images"
    )
    lines += [f"  {line}" for line in report.edits[:20]]
    if report.status in ("repaired", "improved"):
        lines.append(f"repaired model: {report.output}")
    else:
        lines.append("no edit was kept: no repaired model was written")
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"patch: {report.patch}")
    return "\n".join(lines)


def to_markdown(report: RepairReport) -> str:
    return "\n".join(
        [f"# convdiff repair: {Path(report.target).name}", "", "```", summary(report), "```", ""]
    )


__all__ = ["RepairConfig", "RepairReport", "repair", "summary"]
