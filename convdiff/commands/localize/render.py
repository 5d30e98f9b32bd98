"""How a localization reads: the terminal summary and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.commands.localize.types import LocalizeReport


def summary(report: LocalizeReport) -> str:
    """The terminal summary: one line per finding, stage by stage."""
    lines = [
        f"localize {Path(report.source).name} ({report.src}) -> {Path(report.target).name} "
        f"({report.dst}): {len(report.faults)} finding(s), stages {', '.join(report.stages)}"
    ]
    latent = [f for f in report.findings if f.evidence.get("latent")]
    for f in report.findings:
        if f.evidence.get("latent"):
            continue
        where = ""  # the inputs and tools stages judge whole models, not layers
        if f.source_layer or f.target_layer:
            where = f" at {f.source_layer or '-'} -> {f.target_layer or '-'}"
        lines.append(f"  [{f.stage}] {f.kind}{where}: {f.summary}")
        if f.suggestion:
            lines.append(f"      fix: {f.suggestion}")
    if latent:
        lines.append(
            f"  {len(latent)} latent difference(s): the target computes the source's values "
            "there on these images (listed in report.md)"
        )
    function = report.runs.get("function") or {}
    if function.get("points"):
        lines.append(f"  {_function_line(function)}")
    for crash in report.crashes:
        lines.append(f"  stage {crash['stage']} crashed: {crash['message']}")
    lines += [f"  note: {note}" for note in report.notes]
    lines.append(f"report: {Path(report.out_dir) / 'report.md'}")
    return "\n".join(lines)


def _function_line(function: dict[str, Any]) -> str:
    """How the segments between anchors compared (see :mod:`convdiff.ir.segments`)."""
    measured = [p for p in function["points"] if p["divergence"] != "not measured"]
    relaxed = function.get("relaxed", {})
    differ = [
        p
        for p in measured
        if p["divergence"] is None or p["divergence"] > relaxed.get(p["b"], function["tolerance"])
    ]
    return (
        f"function: fed the source's tensors, the target's {len(measured)} segment(s) between "
        f"anchors were run on {len(function['images'])} image(s): {len(differ)} differ "
        f"(tolerance {function['tolerance']:g}"
        + (
            f"; {max(relaxed.values()):g} for the {len(relaxed)} after a weight that lost precision"
            if relaxed
            else ""
        )
        + ")"
    )


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
        out += [f"- {side} import: {note}" for note in info.get("notes") or []]
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
    function = report.runs.get("function") or {}
    if function.get("points"):
        out += ["## Segments", "", _function_line(function), ""]
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
