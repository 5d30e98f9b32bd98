"""Human-readable views of a run report: the terminal summary and report.md."""

from __future__ import annotations

from pathlib import Path

from convdiff.commands.run.types import Hop, LocalizationSummary, RepairSummary, RunReport
from convdiff.core.jsonio import write_atomic
from convdiff.core.text import num, pct

_VERDICT = {
    "ok": "OK: source and target agree",
    "discrepancy": "DISCREPANCY: source and target disagree",
    "crash": "CRASH: a converter or runtime failed",
    "incomplete": "INCOMPLETE: the run stopped before the end",
}


def _label(index: int) -> str:
    from convdiff.inputs.data import class_name

    return f"{index} {class_name(index)}"


def _options(hop: Hop) -> str:
    return ", ".join(f"{k}={v}" for k, v in hop.options.items() if v is not None) or "defaults"


def _target_preprocessing(report: RunReport) -> str:
    target = report.preprocessing["target"]
    return f"{target.get('description', '')} ({target.get('origin', '')})"


def _tool(hop: Hop) -> str:
    """The tool and its versions, and the environment it ran in when not convdiff's own."""
    where = f"; env {hop.environment['name']}" if hop.environment else ""
    return f"{hop.tool} ({hop.version}{where})"


def hop_line(hop: Hop) -> str:
    head = f"{hop.index}. {hop.src} -> {hop.dst} with {_tool(hop)} [{_options(hop)}]"
    if hop.crash is not None:
        return f"{head}: CRASH in {hop.crash.stage}: {hop.crash.message}"
    if hop.agreement is None:
        return f"{head}: not run"
    a = hop.agreement
    return (
        f"{head}: top-1 {pct(a.top1_discrepancy)}, top-5 {pct(a.top5_discrepancy)}, "
        f"max |diff| {num(a.max_abs_diff)}"
    )


def summary(report: RunReport) -> str:
    """What the terminal shows at the end of a run: verdict, numbers, where to read more."""
    weights = report.weights.get("weights") or report.weights.get("used") or "?"
    lines = [
        f"convdiff run: {report.model} {report.src} -> {report.dst} "
        f"(route {' -> '.join(report.route)}; weights {weights})",
        f"images: {report.data.get('images', 0)} from {report.data.get('source', '?')}"
        + (
            f" (--sample {report.data['sample']} --seed {report.data.get('seed', 0)})"
            if report.data.get("sample")
            else ""
        )
        + (f", {report.data['skipped']} files skipped" if report.data.get("skipped") else ""),
    ]
    if report.preprocessing:
        lines.append(f"preprocessing: {report.preprocessing.get('description', '')}")
    if "target" in report.preprocessing:
        lines.append(f"target fed: {_target_preprocessing(report)}")
    lines.append("chain (each hop compared with the source):")
    lines += [f"  {hop_line(hop)}" for hop in report.chain] or ["  (no hop ran)"]
    lines.append("")
    verdict = _VERDICT.get(report.status, report.status)
    compared = [hop for hop in report.chain if hop.agreement is not None]
    if report.status in ("crash", "incomplete") and compared:
        last = compared[-1]
        verdict += f"; up to hop {last.index} ({last.dst})"
    if report.top1_discrepancy is not None:
        lines.append(
            f"{verdict}. top-1 discrepancy {pct(report.top1_discrepancy)} "
            f"(allowed {report.max_discrepancy:g}%), top-5 {pct(report.top5_discrepancy)}, "
            f"Kendall tau {num(report.kendall_tau_top5)}, max |diff| {num(report.max_abs_diff)}, "
            f"mean |diff| {num(report.mean_abs_diff)}"
        )
    else:
        lines.append(f"{verdict}.")
    if report.src_accuracy is not None:
        lines.append(
            f"accuracy on {report.data.get('labelled', 0)} labelled images: "
            f"source {pct(report.src_accuracy)}, target {pct(report.dst_accuracy)}"
        )
    if report.first_disagreeing_hop is not None:
        lines.append(f"first hop that lost agreement: {report.first_disagreeing_hop}")
    for d in report.disagreeing[:10]:
        lines.append(f"  {d['image']}: {_label(d['src_label'])} -> {_label(d['dst_label'])}")
    if len(report.disagreeing) > 10:
        lines.append(f"  ... {len(report.disagreeing) - 10} more in report.json")
    for crash in report.crashes:
        lines.append(f"crash: {crash.stage} / {crash.tool} {crash.version}: {crash.message}")
        if crash.hint:
            lines.append(f"  hint: {crash.hint}")
        if crash.log:
            lines.append(f"  tool output: {crash.log}")
    lines += [f"note: {note}" for note in report.notes]
    lines += localization_lines(report.localization)
    lines += repair_lines(report.repair)
    lines.append(f"report: {Path(report.out_dir) / 'report.json'}")
    return "\n".join(lines)


def markdown(report: RunReport) -> str:
    """report.md: the same facts as report.json, for people."""
    rows = [
        "| hop | edge | tool (versions) | options | top-1 | top-5 | tau | max abs diff | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for hop in report.chain:
        a = hop.agreement
        status = f"crash ({hop.crash.stage}): {hop.crash.message}" if hop.crash else "ran"
        top1, top5 = (a.top1_discrepancy, a.top5_discrepancy) if a else (None, None)
        tau, diff = (a.kendall_tau_top5, a.max_abs_diff) if a else (None, None)
        tool = _tool(hop)
        rows.append(
            f"| {hop.index} | {hop.src} -> {hop.dst} | {tool} | {_options(hop)} | "
            f"{pct(top1)} | {pct(top5)} | {num(tau)} | {num(diff)} "
            f"| {status.replace('|', '/')} |"
        )
    parts = [
        f"# convdiff run: {report.model}, {report.src} -> {report.dst}",
        "",
        f"**Status: {report.status}**" + (" (partial)" if report.partial else ""),
        "",
        f"- route: {' -> '.join(report.route)}",
        f"- weights: {report.weights}",
        f"- images: {report.data}",
        f"- preprocessing: {report.preprocessing.get('description', 'n/a')}",
        *(
            [f"- target fed: {_target_preprocessing(report)}"]
            if "target" in report.preprocessing
            else []
        ),
        f"- top-1 discrepancy: {pct(report.top1_discrepancy)} "
        f"(allowed {report.max_discrepancy:g}%)",
        f"- top-5 discrepancy: {pct(report.top5_discrepancy)}; "
        f"Kendall tau (top-5): {num(report.kendall_tau_top5)}",
        f"- output difference: max {num(report.max_abs_diff)}, mean {num(report.mean_abs_diff)}",
        f"- accuracy: source {pct(report.src_accuracy)}, target {pct(report.dst_accuracy)}",
        "",
        "## Chain",
        "",
        *rows,
        "",
    ]
    if report.disagreeing:
        parts += ["## Disagreeing images", "", "| image | source | target |", "|---|---|---|"]
        parts += [
            f"| {d['image']} | {_label(d['src_label'])} | {_label(d['dst_label'])} |"
            for d in report.disagreeing
        ]
        parts.append("")
    if report.crashes:
        parts += ["## Crashes", ""]
        parts += [
            f"- hop {c.hop}, {c.stage}: {c.tool} {c.version} ({c.failure}): {c.message}"
            + (f"\n  - hint: {c.hint}" if c.hint else "")
            for c in report.crashes
        ]
        parts.append("")
    if report.timings:
        parts += [
            "## Timings",
            "",
            "| phase | wall s | framework s | peak MB |",
            "|---|---|---|---|",
        ]
        parts += [
            f"| {name} | {p.seconds:.2f} | {p.work_seconds:.2f} | {p.peak_rss_mb:.0f} |"
            for name, p in report.timings.items()
        ]
        parts.append("")
    if report.localization:
        parts += ["## Localization", ""]
        parts += [f"- {line.strip()}" for line in localization_lines(report.localization)]
        parts.append("")
    if report.repair:
        parts += ["## Repair", ""]
        parts += [f"- {line.strip()}" for line in repair_lines(report.repair)]
        parts.append("")
    parts += [f"- note: {n}" for n in report.notes]
    return "\n".join(parts) + "\n"


def localization_lines(localization: LocalizationSummary | None) -> list[str]:
    """The run summary's lines about its localization."""
    if localization is None:
        return []
    status, out = localization.status, localization.out_dir
    if status in ("skipped", "failed"):
        return [f"localize {status}: {localization.error}"]
    found = ", ".join(f"{n} {stage}" for stage, n in localization.findings.items())
    lines = [f"localize: {found or 'no finding'}"]
    if localization.top:
        lines.append(f"  top finding: {localization.top}")
    if localization.error:
        lines.append(f"  {localization.error}")
    lines.append(f"  localize report: {Path(out) / 'report.md'}")
    return lines


def repair_lines(repair: RepairSummary | None) -> list[str]:
    """The run summary's lines about its repair."""
    if repair is None:
        return []
    if repair.status in ("skipped", "failed"):
        return [f"repair {repair.status}: {repair.error}"]
    before, after = repair.before, repair.after
    lines = [
        f"repair: {repair.status}: top-1 discrepancy {before.get('top1_discrepancy')}% -> "
        f"{after.get('top1_discrepancy')}%, max |diff| {before.get('max_abs_diff', 0):.3g} -> "
        f"{after.get('max_abs_diff', 0):.3g} ({repair.passes.get('native', 0)} "
        "inference passes)"
    ]
    fallback = repair.fallback
    if fallback.get("float_layers"):
        lines.append(
            f"  float fallback: {fallback['float_layers']} of {fallback['quantized_layers']} "
            f"quantized layers run in float; size {fallback['size_before'] / 1e6:.2f} MB -> "
            f"{fallback['size_after'] / 1e6:.2f} MB"
        )
    if repair.output:
        lines.append(f"  repaired model: {repair.output}")
    lines.append(f"  patch: {repair.patch}")
    return lines


def write_markdown(report: RunReport, path: Path) -> None:
    write_atomic(path, markdown(report))
