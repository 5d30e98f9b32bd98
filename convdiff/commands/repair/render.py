"""How a repair reads: the terminal summary and repair.md."""

from __future__ import annotations

from pathlib import Path

from convdiff.commands.repair.types import RepairReport


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
    if report.fallback:
        lines += _fallback_lines(report.fallback)
    if report.status in ("repaired", "improved"):
        lines.append(f"repaired model: {report.output}")
    else:
        lines.append("no edit was kept: no repaired model was written")
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"patch: {report.patch}")
    return "\n".join(lines)


def _fallback_lines(fallback: dict) -> list[str]:
    """The float fallback: how many layers left integer arithmetic, and what it bought."""
    n, total = fallback["float_layers"], fallback["quantized_layers"]
    lines = [
        f"float fallback ({fallback['measure'] or 'no candidate'}): "
        + (
            f"{n} of {total} quantized layers run in float; top-1 discrepancy "
            f"{fallback['top1_before']}% -> {fallback['top1_after']}%, max |diff| "
            f"{fallback['max_abs_diff_before']:.3g} -> {fallback['max_abs_diff_after']:.3g}; "
            f"size {_mb(fallback['size_before'])} -> {_mb(fallback['size_after'])}"
            if n
            else f"no set of the {total} quantized layers in float agreed better; model unchanged"
        )
    ]
    lines += [
        f"  top {t['layers']} in float -> top-1 {t['top1_discrepancy']}%, max |diff| "
        f"{t['max_abs_diff']:.3g}"
        for t in fallback["trials"]
    ]
    if n:
        lines.append(
            f"  float layers: {', '.join(fallback['layers'][:12])}" + (" ..." if n > 12 else "")
        )
    return lines


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def to_markdown(report: RepairReport) -> str:
    return "\n".join(
        [f"# convdiff repair: {Path(report.target).name}", "", "```", summary(report), "```", ""]
    )


__all__ = ["summary", "to_markdown"]
