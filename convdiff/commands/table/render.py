"""Views of a table: CSV (one row per cell), JSON, Markdown and one self-contained HTML page.

The HTML page is a heatmap per model whose cell colour encodes the top-1 discrepancy; crash
cells have a colour of their own and name the tool and the reason in their tooltip. It has
inline CSS and no scripts, fonts or images, so it can be mailed or attached to a CI job as is.
"""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path

from convdiff.commands.table.types import Cell, ModelBlock, TableReport, column_label
from convdiff.core.jsonio import write_atomic

CSV_COLUMNS = (
    "model",
    "src",
    "dst",
    "converter",
    "status",
    "route",
    "images",
    "top1_discrepancy",
    "top5_discrepancy",
    "max_abs_diff",
    "crash_stage",
    "crash_tool",
    "crash_reason",
    "reused",
    "run_dir",
)

# Colour stops of the heat scale (ColorBrewer RdYlGn ends and middle), at t = sqrt(top-1 / 100):
# the square root spreads the small discrepancies that matter most (1% is a tenth of the way).
HEAT_STOPS = ((0.0, (26, 152, 80)), (0.5, (254, 224, 139)), (1.0, (215, 48, 39)))
CRASH_COLOUR = (91, 44, 131)  # purple: no number can be read off the heat scale as a crash
OTHER_COLOUR = (189, 189, 189)  # error or unfinished
DIAGONAL_COLOUR = (240, 240, 240)
LEGEND_TICKS = (0.0, 1.0, 5.0, 25.0, 50.0, 100.0)


def cell_summary(cell: Cell) -> str:
    """One line: the numbers, or where and why it crashed."""
    if cell.crash is not None:
        c = cell.crash
        return f"crash in {c.stage} ({c.tool}): {c.reason}"
    if cell.status == "error":
        return f"error: {cell.error}"
    if cell.top1_discrepancy is None:
        return cell.status
    return (
        f"{cell.status}, top-1 {cell.top1_discrepancy:.1f}%, top-5 {cell.top5_discrepancy:.1f}%, "
        f"max |diff| {cell.max_abs_diff:.3g}"
    )


def write_outputs(report: TableReport, out: Path) -> None:
    """table.json, table.csv, table.md and table.html, each written atomically."""
    write_atomic(out / "table.json", report.to_json())
    write_atomic(out / "table.csv", to_csv(report))
    write_atomic(out / "table.md", to_markdown(report))
    write_atomic(out / "table.html", to_html(report))


def _num(value: float | None) -> str:
    return "" if value is None else repr(value)


def to_csv(report: TableReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in report.cells:
        crash = c.crash
        writer.writerow(
            [
                c.model,
                c.src,
                c.dst,
                c.converter,
                c.status,
                " -> ".join(c.route),
                c.images,
                _num(c.top1_discrepancy),
                _num(c.top5_discrepancy),
                _num(c.max_abs_diff),
                crash.stage if crash else "",
                crash.tool if crash else "",
                crash.reason if crash else "",
                "yes" if c.reused else "no",
                c.run_dir,
            ]
        )
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _short(cell: Cell) -> str:
    """A cell's text in the Markdown and HTML grids."""
    if cell.crash is not None:
        return f"CRASH {cell.crash.stage} {cell.crash.tool}"
    if cell.status == "error":
        return "ERROR"
    if cell.top1_discrepancy is None:
        return cell.status
    return (
        f"{_pct(cell.top1_discrepancy)} / {_pct(cell.top5_discrepancy)} / {cell.max_abs_diff:.2g}"
    )


def _block_cells(report: TableReport, block: ModelBlock) -> list[Cell]:
    return [c for c in report.cells if c.model == block.name]


def to_markdown(report: TableReport) -> str:
    """One grid per model; cells are top-1 / top-5 discrepancy / max |diff|."""
    lines = [
        "## convdiff table" + ("" if report.status == "complete" else " (incomplete)"),
        "",
        "Cells: top-1 discrepancy / top-5 discrepancy / max |output diff| of the target against "
        f"the source on {_images(report)} images; preprocessing: {report.options.get('preprocess')}"
        "; rows are sources, columns targets.",
        "",
    ]
    for block in report.blocks:
        title = block.name if block.kind == "zoo" else f"{block.name} ({block.model})"
        columns = report.columns(block)
        labels = [column_label(dst, group) for dst, group in columns]
        lines += [f"### {title}", "", f"| src \\ dst | {' | '.join(labels)} |"]
        lines.append("|---" * (len(columns) + 1) + "|")
        for src in block.sources:
            row = []
            for dst, group in columns:
                cell = report.cell(block.name, src, dst, group)
                row.append("—" if src == dst or cell is None else _short(cell))
            lines.append(f"| **{src}** | {' | '.join(row)} |")
        problems = [c for c in _block_cells(report, block) if c.crash or c.status == "error"]
        if problems:
            lines.append("")
            lines += [
                f"- {c.src} -> {c.column}: {cell_summary(c).replace('|', '/')}" for c in problems
            ]
        located = [c for c in _block_cells(report, block) if c.top_finding]
        if located:
            lines.append("")
            lines += [f"- {c.src} -> {c.column} top finding: {c.top_finding}" for c in located]
        lines.append("")
    if report.reused:
        lines.append(f"Reused from an earlier invocation: {len(report.reused)} cells.")
    lines += [f"Note: {note}" for note in report.notes]
    return "\n".join(lines).rstrip() + "\n"


def _images(report: TableReport) -> str:
    counts = sorted({c.images for c in report.cells if c.images})
    return "/".join(str(n) for n in counts) or "?"


def heat_colour(top1: float) -> tuple[int, int, int]:
    """The heat scale's colour of a top-1 discrepancy in percent."""
    t = math.sqrt(min(max(top1, 0.0), 100.0) / 100.0)
    for (t0, c0), (t1, c1) in zip(HEAT_STOPS, HEAT_STOPS[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return tuple(round(a + (b - a) * f) for a, b in zip(c0, c1, strict=True))  # type: ignore[return-value]
    return HEAT_STOPS[-1][1]


def _css(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _ink(rgb: tuple[int, int, int]) -> str:
    """Black or white text, whichever reads better on ``rgb``."""
    r, g, b = rgb
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def _tooltip(cell: Cell) -> str:
    if cell.crash is not None:
        c = cell.crash
        return f"crash in {c.stage}: {c.tool} ({c.version}): {c.reason}"
    route = " -> ".join(cell.route)
    text = f"{route}: {cell_summary(cell)}" + (" (reused)" if cell.reused else "")
    return text + (f"\ntop finding: {cell.top_finding}" if cell.top_finding else "")


def _html_cell(cell: Cell | None, src: str, dst: str) -> str:
    if src == dst or cell is None:
        return f'<td class="diag" style="background:{_css(DIAGONAL_COLOUR)}"></td>'
    if cell.crash is not None:
        colour, kind = CRASH_COLOUR, "crash"
        text = f"CRASH<br><small>{html.escape(cell.crash.tool)}</small>"
    elif cell.top1_discrepancy is None:
        colour, kind = OTHER_COLOUR, "other"
        text = html.escape(cell.status.upper())
    else:
        colour, kind = heat_colour(cell.top1_discrepancy), "heat"
        text = (
            f"{cell.top1_discrepancy:.1f}%<br><small>top-5 {cell.top5_discrepancy:.1f}% · "
            f"{cell.max_abs_diff:.2g}</small>"
        )
    return (
        f'<td class="{kind}" style="background:{_css(colour)};color:{_ink(colour)}" '
        f'title="{html.escape(_tooltip(cell), quote=True)}">{text}</td>'
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 6px}
p.meta{color:#555;margin:0 0 12px}
table.heat{border-collapse:separate;border-spacing:3px}
table.heat th{font-weight:600;padding:4px 8px;text-align:center}
table.heat th.row{text-align:right}
table.heat td{width:132px;height:56px;text-align:center;vertical-align:middle;border-radius:3px}
table.heat td small{font-size:11px}
.legend{display:flex;gap:18px;align-items:center;flex-wrap:wrap;margin:8px 0 4px}
.legend .bar{display:flex}.legend .bar span{width:46px;height:18px;font-size:10px;
text-align:center;line-height:18px}
.legend .swatch{display:inline-block;width:28px;height:18px;vertical-align:middle;
margin-right:6px;border-radius:3px}
ul.crashes{margin:6px 0;color:#444;font-size:12px}
"""


def _legend() -> str:
    bar = "".join(
        f'<span style="background:{_css(heat_colour(t))};color:{_ink(heat_colour(t))}">'
        f"{t:g}%</span>"
        for t in LEGEND_TICKS
    )
    return (
        '<div class="legend">'
        f'<div><b>top-1 discrepancy</b> <div class="bar">{bar}</div></div>'
        f'<div><span class="swatch" style="background:{_css(CRASH_COLOUR)}"></span>'
        "crash (hover: tool and reason)</div>"
        f'<div><span class="swatch" style="background:{_css(OTHER_COLOUR)}"></span>'
        "error or unfinished</div>"
        f'<div><span class="swatch" style="background:{_css(DIAGONAL_COLOUR)}"></span>'
        "source = target</div>"
        "</div>"
    )


def _html_block(report: TableReport, block: ModelBlock) -> str:
    columns = report.columns(block)
    head = "".join(f"<th>{html.escape(column_label(dst, group))}</th>" for dst, group in columns)
    rows = []
    for src in block.sources:
        tds = "".join(
            _html_cell(report.cell(block.name, src, dst, group), src, dst) for dst, group in columns
        )
        rows.append(f'<tr><th class="row">{html.escape(src)}</th>{tds}</tr>')
    crashes = [c for c in _block_cells(report, block) if c.crash or c.status == "error"]
    notes = "".join(
        f"<li>{html.escape(c.src)} → {html.escape(c.column)}: {html.escape(cell_summary(c))}</li>"
        for c in crashes
    )
    title = block.name if block.kind == "zoo" else f"{block.name} ({block.model})"
    return (
        f'<section class="model" id="model-{html.escape(block.name, quote=True)}">'
        f"<h2>{html.escape(title)}</h2>"
        '<table class="heat"><tr><th class="row">src \\ dst</th>'
        f"{head}</tr>{''.join(rows)}</table>"
        + (f'<ul class="crashes">{notes}</ul>' if notes else "")
        + "</section>"
    )


def to_html(report: TableReport) -> str:
    """One self-contained page: inline CSS, no scripts, no external resources."""
    state = "" if report.status == "complete" else " (incomplete)"
    meta = (
        f"{len(report.cells)} cells, {_images(report)} images each, preprocessing "
        f"{report.options.get('preprocess')}, weights {report.options.get('weights')}; "
        f"convdiff {report.convdiff_version}, {report.created}"
    )
    blocks = "".join(_html_block(report, block) for block in report.blocks)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>convdiff table{state}</title><style>{_STYLE}</style></head><body>"
        f"<h1>convdiff label-discrepancy table{state}</h1>"
        f'<p class="meta">{html.escape(meta)}</p>{_legend()}{blocks}</body></html>\n'
    )


__all__ = [
    "CRASH_COLOUR",
    "CSV_COLUMNS",
    "heat_colour",
    "to_csv",
    "to_html",
    "to_markdown",
    "write_outputs",
]
