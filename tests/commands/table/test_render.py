"""table.html in a real browser: headless Chromium renders the page, the test reads the pixels.

The table is built from hand-made cells (every kind: agreement, small and large discrepancies,
a crash, an error, two model blocks), so the expected colours and counts are known exactly.
Chromium is a test dependency: ``apt-get install -y chromium`` (no download at test time).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convdiff.commands.table.flow import Cell, CellCrash, ModelBlock, TableReport
from convdiff.commands.table.render import (
    CRASH_COLOUR,
    DIAGONAL_COLOUR,
    OTHER_COLOUR,
    heat_colour,
    to_html,
    write_outputs,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CELL_AREA = 132 * 56  # CSS size of a heat cell's box; the text covers part of it
REASON = "Converter is not implemented (ReduceMean v18)"


def _cell(src: str, dst: str, top1: float | None, **extra) -> Cell:
    numbers = {} if top1 is None else {"top5_discrepancy": top1, "max_abs_diff": 0.25}
    status = "ok" if top1 == 0 else "discrepancy" if top1 is not None else "crash"
    return Cell(
        "mobilenetv2",
        src,
        dst,
        status=extra.pop("status", status),
        route=(src, dst),
        images=8,
        top1_discrepancy=top1,
        run_dir=f"cells/mobilenetv2/{src}-{dst}",
        **numbers,
        **extra,
    )


def sample_table() -> TableReport:
    crash = CellCrash("convert", "onnx2torch", "onnx2torch 1.5.15", REASON, "exception", 2)
    cells = [
        _cell("keras", "torch", None, crash=crash),
        _cell("keras", "tf", 0.0),
        _cell("keras", "tflite", 3.0),
        _cell("tf", "torch", 50.0),
        _cell("tf", "keras", 0.0),
        _cell("tf", "tflite", 100.0),
        _cell("torch", "keras", None, status="error", error="weights file missing"),
        _cell("torch", "tf", 12.5),
        _cell("torch", "tflite", 25.0),
        Cell("tiny", "onnx", "torch", "ok", ("onnx", "torch"), 8, 0.0, 0.0, 1e-7),
        Cell("tiny", "onnx", "keras", "incomplete", ("onnx", "keras")),
        Cell("tiny", "onnx", "tf", "ok", ("onnx", "keras", "tf"), 8, 0.0, 0.0, 3e-7),
        Cell("tiny", "onnx", "tflite", "ok", ("onnx", "keras", "tflite"), 8, 0.0, 0.0, 2e-7),
    ]
    targets = ("torch", "keras", "tf", "tflite")
    return TableReport(
        frameworks=list(targets),
        blocks=[
            ModelBlock("mobilenetv2", "mobilenetv2", "zoo", ("keras", "tf", "torch"), targets),
            ModelBlock("tiny", "models/tiny.onnx", "file", ("onnx",), targets),
        ],
        cells=cells,
        status="complete",
        options={"preprocess": "source", "weights": "auto"},
    )


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: apt-get update && apt-get install -y chromium")
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--force-color-profile=srgb",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, str]:
    out = tmp_path_factory.mktemp("table")
    write_outputs(sample_table(), out)
    html = out / "table.html"
    shot = out / "shot.png"
    url = html.resolve().as_uri()
    chromium(f"--screenshot={shot}", "--window-size=1200,900", url, profile=out / "p1")
    dom = chromium("--dump-dom", url, profile=out / "p2").stdout
    return html, np.asarray(Image.open(shot).convert("RGB")), dom


def count(pixels: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int(np.all(pixels == np.asarray(rgb, np.uint8), axis=-1).sum())


def test_page_is_self_contained(page) -> None:
    html, _, _ = page
    text = html.read_text()
    assert "<style>" in text
    for external in ("<script", "<link", "<img", "src=", "url(", "http://", "https://", "@import"):
        assert external not in text


def test_screenshot_shows_the_heatmap(page) -> None:
    _, pixels, _ = page
    assert pixels.shape == (900, 1200, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, colours: not blank
    # one crash cell and the legend's swatch (28 x 18)
    crash = count(pixels, CRASH_COLOUR)
    assert 0.7 * CELL_AREA <= crash <= CELL_AREA * 1.1 + 28 * 18
    # colours that only a cell has (not legend ticks): one cell each
    for top1 in (3.0, 12.5):
        assert 0.7 * CELL_AREA <= count(pixels, heat_colour(top1)) <= CELL_AREA * 1.1, top1
    # 0%: five cells, plus the legend's 0% tick (46 x 18 minus its label)
    zero = count(pixels, heat_colour(0.0))
    assert 5 * 0.7 * CELL_AREA <= zero <= 5 * CELL_AREA * 1.1 + 46 * 18
    # the error cell and the unfinished cell share the grey, plus the legend swatch
    grey = count(pixels, OTHER_COLOUR)
    assert 2 * 0.7 * CELL_AREA <= grey <= 2 * CELL_AREA * 1.1 + 28 * 18
    # the zoo block's three diagonal cells; the file block has none (onnx is no column)
    assert count(pixels, DIAGONAL_COLOUR) >= 3 * 0.9 * CELL_AREA


def test_dom_has_every_block_and_the_crash_reason(page) -> None:
    _, _, dom = page
    assert re.findall(r'<section class="model" id="model-([^"]+)"', dom) == [
        "mobilenetv2",
        "tiny",
    ]
    assert "<h2>tiny (models/tiny.onnx)</h2>" in dom
    assert (
        'title="crash in convert: onnx2torch (onnx2torch 1.5.15): '
        'Converter is not implemented (ReduceMean v18)"' in dom
    )
    assert dom.count('<td class="heat"') == 10
    assert dom.count('<td class="crash"') == 1
    assert dom.count('<td class="other"') == 2
    assert dom.count('<td class="diag"') == 3
    assert "crash (hover: tool and reason)" in dom


def test_html_escapes_what_tools_say() -> None:
    table = sample_table()
    bad = CellCrash("convert", "<tool>", "1.0", 'reason with "quotes" & <tags>')
    table.cells[0] = Cell("mobilenetv2", "keras", "torch", "crash", crash=bad)
    text = to_html(table)
    assert "<tool>" not in text and "<tags>" not in text
    assert "reason with &quot;quotes&quot; &amp; &lt;tags&gt;" in text
