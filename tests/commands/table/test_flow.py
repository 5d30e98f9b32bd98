"""`convdiff table`: cells, outputs, resumability after an interruption, scheduling, and the
target-preprocessing option passed on to its runs.

The real tables use two tiny ONNX files written in the test: ``tiny`` converts to torch and to
keras; ``reduce18`` converts to keras but crashes onnx2torch (a real crash cell). Cells run in
real workers on the first two sample images.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.run.types import RunReport
from convdiff.commands.table.flow import TableReport
from convdiff.commands.table.schedule import Job, estimate_gb, memory_total_gb, pick
from tests.helpers import ROOT

CELLS = ["tiny/onnx-torch", "tiny/onnx-keras", "reduce18/onnx-torch", "reduce18/onnx-keras"]
CRASH_REASON = (
    "Converter is not implemented (OperationDescription(domain='', "
    "operation_type='ReduceMean', version=18))"
)


@pytest.fixture(scope="module")
def models(tiny_onnx: Path, reduce18_onnx: Path) -> tuple[Path, Path]:
    return tiny_onnx, reduce18_onnx


def table_args(models: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return [
        "table",
        "--models",
        ",".join(str(m) for m in models),
        "--frameworks",
        "onnx,torch,keras",
        "--limit",
        "2",
        "--out",
        str(out),
        "--cache-dir",
        str(out.parent / "cache"),
        *extra,
    ]


def final(report_json: Path) -> bool:
    """What the table counts as a finished cell: complete, or a crash."""
    try:
        report = RunReport.from_json(report_json.read_text())
    except (OSError, ValueError):
        return False
    return report.status == "crash" or (
        report.status in ("ok", "discrepancy") and not report.partial
    )


def read_table(out: Path) -> TableReport:
    return TableReport.from_json((out / "table.json").read_text())


# -- a real table --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_table(models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """The table run once with two cells at a time, as the tests below read it."""
    out = tmp_path_factory.mktemp("table") / "t"
    result = CliRunner().invoke(cli, table_args(models, out, "--jobs", "2"))
    return out, result


@pytest.mark.workers
def test_table_cells_csv_and_json(tiny_table) -> None:
    out, result = tiny_table
    assert result.exit_code == 3, result.stderr  # a crash cell makes it 3, as for `run`
    rows = list(csv.reader(io.StringIO((out / "table.csv").read_text())))
    assert rows[0] == [
        "model", "src", "dst", "status", "route", "images", "top1_discrepancy",
        "top5_discrepancy", "max_abs_diff", "crash_stage", "crash_tool", "crash_reason",
        "reused", "run_dir", "converter",
    ]  # fmt: skip
    diffs = [row.pop(8) for row in rows[1:]]
    assert rows[1:] == [
        ["tiny", "onnx", "torch", "ok", "onnx -> torch", "2", "0.0", "0.0",
         "", "", "", "no", "cells/tiny/onnx-torch", ""],
        ["tiny", "onnx", "keras", "ok", "onnx -> keras", "2", "0.0", "0.0",
         "", "", "", "no", "cells/tiny/onnx-keras", ""],
        ["reduce18", "onnx", "torch", "crash", "onnx -> torch", "2", "", "",
         "convert", "onnx2torch", CRASH_REASON, "no", "cells/reduce18/onnx-torch", ""],
        ["reduce18", "onnx", "keras", "ok", "onnx -> keras", "2", "0.0", "0.0",
         "", "", "", "no", "cells/reduce18/onnx-keras", ""],
    ]  # fmt: skip
    assert diffs[2] == ""
    table = read_table(out)
    assert table.schema_version == 1 and table.status == "complete" and table.reused == []
    assert [c.key for c in table.cells] == CELLS
    for cell, diff in zip(table.cells, diffs, strict=True):
        run = RunReport.from_json((out / cell.run_dir / "report.json").read_text())
        if cell.status == "ok":
            assert float(diff) == cell.max_abs_diff == run.max_abs_diff
            assert 0 <= cell.max_abs_diff < 1e-6
        else:
            assert cell.max_abs_diff is None and run.max_abs_diff is None
    crash = table.cell("reduce18", "onnx", "torch").crash
    assert (crash.stage, crash.tool, crash.reason, crash.failure, crash.hop) == (
        "convert",
        "onnx2torch",
        CRASH_REASON,
        "exception",
        1,
    )
    assert [b.name for b in table.blocks] == ["tiny", "reduce18"]
    assert all(b.sources == ("onnx",) for b in table.blocks)
    assert {c.estimate_gb for c in table.cells} == {1.0}


@pytest.mark.workers
def test_table_prints_markdown_and_one_line_per_cell(tiny_table) -> None:
    out, result = tiny_table
    assert result.stdout == (out / "table.md").read_text() + (
        f"table: {out.resolve() / 'table.html'} (also .json, .csv, .md)\n"
    )
    assert "| **onnx** | — | CRASH convert onnx2torch | 0.0% / 0.0% / " in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 4
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines) == [
        "reduce18 onnx -> keras",
        "reduce18 onnx -> torch",
        "tiny onnx -> keras",
        "tiny onnx -> torch",
    ]
    assert [line.split("]")[0] for line in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert all(" left)" in line for line in lines[:3]) and " left)" not in lines[3]


@pytest.mark.workers
def test_table_again_reuses_every_cell(tiny_table, models: tuple[Path, Path]) -> None:
    out, _ = tiny_table
    before = {c: (out / "cells" / c / "report.json").stat().st_mtime_ns for c in CELLS}
    logs = sorted(str(p) for p in (out / "cells").rglob("logs/*"))
    started = time.perf_counter()
    result = CliRunner().invoke(cli, table_args(models, out, "--jobs", "2"))
    took = time.perf_counter() - started
    assert result.exit_code == 3
    table = read_table(out)
    assert table.reused == CELLS and all(c.reused for c in table.cells)
    assert took < 5.0  # no worker started: a worker alone needs seconds to import a framework
    assert sorted(str(p) for p in (out / "cells").rglob("logs/*")) == logs
    after = {c: (out / "cells" / c / "report.json").stat().st_mtime_ns for c in CELLS}
    assert after == before
    assert all(line.endswith("(reused)") for line in result.stderr.splitlines())


@pytest.mark.workers
def test_changed_options_redo_the_cells(models: tuple[Path, Path], tmp_path: Path) -> None:
    """A reused cell must have been made with the same options (here: --limit)."""
    out = tmp_path / "t"
    args = ["--models", str(models[0]), "--frameworks", "onnx,torch", "--out", str(out)]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(cli, ["table", *args, *cache, "--limit", "1", "--quiet"])
    assert first.exit_code == 0, first.stderr
    second = CliRunner().invoke(cli, ["table", *args, *cache, "--limit", "2", "--quiet"])
    assert second.exit_code == 0, second.stderr
    table = read_table(out)
    assert table.reused == [] and table.cells[0].images == 2


# -- --localize ---------------------------------------------------------------------------------

# As in tests/commands/check/test_flow.py: the int8 kernel of the 48-filter convolution, named
# as the files do.
QUANT_FINDING = (
    "weights precision at conv -> tiny_cnn_1/relu_1/Relu;"
    "tiny_cnn_1/bn_1/batchnorm/add_1;tiny_cnn_1/conv_1/convolution;"
    "tiny_cnn_1/bn_1/batchnorm/sub1: conv2d weight: precision lost: int8 in the target file "
    "(per-channel scales) (max abs 0.000786, max rel 0.00391)"
)


def test_localize_only_discrepancies_unless_above_a_max_diff(
    keras_cnn_q: dict[str, str], tmp_path: Path
) -> None:
    """Dynamic-range TFLite keeps the top-1 of the tiny CNN (no discrepancy cell), so --localize
    alone localizes nothing; --localize-above 0 localizes the cell, also when it is reused."""
    out = tmp_path / "t"
    args = [
        "table", "--models", keras_cnn_q["keras"], "--frameworks", "keras,tflite",
        "--tflite-opt", "dynamic-range", "--limit", "2", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--quiet",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--localize"])
    assert result.exit_code == 0, result.stdout + result.stderr
    (cell,) = read_table(out).cells
    assert (cell.key, cell.status, cell.top1_discrepancy) == ("model/keras-tflite", "ok", 0.0)
    assert cell.max_abs_diff > 0 and cell.top_finding == ""
    assert not (out / cell.run_dir / "localize").exists()
    assert "top finding" not in (out / "table.md").read_text()

    result = CliRunner().invoke(cli, [*args, "--localize-above", "0"])
    assert result.exit_code == 0, result.stdout + result.stderr
    table = read_table(out)
    assert table.reused == ["model/keras-tflite"]
    assert table.cells[0].top_finding == QUANT_FINDING
    assert f"- keras -> tflite top finding: {QUANT_FINDING}\n" in (out / "table.md").read_text()
    assert f"top finding: {QUANT_FINDING}" in html.unescape((out / "table.html").read_text())
    # a bound above the cell's max |diff| localizes nothing
    result = CliRunner().invoke(cli, [*args, "--localize-above", "1"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert read_table(out).cells[0].top_finding == ""


# -- interrupted and resumed ------------------------------------------------------------------


def _holders(folder: Path) -> list[int]:
    """Processes with a file open under ``folder`` (orphaned workers of a killed table)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith(str(folder)) for link in links):
            pids.append(int(entry.name))
    return pids


@pytest.mark.workers
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_table_resumes(models: tuple[Path, Path], tmp_path: Path, sig) -> None:
    """Kill the table once its first cell is final: the rerun reuses that cell and does the
    other (one model, two cells, one at a time)."""
    out = tmp_path / "t"
    argv = [sys.executable, "-m", "convdiff.cli", *table_args(models[:1], out, "--jobs", "1")]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    cells = CELLS[:2]
    deadline = time.monotonic() + 180
    while not final(out / "cells" / cells[0] / "report.json"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    done = [c for c in cells if final(out / "cells" / c / "report.json")]
    assert done[:1] == cells[:1]
    # a test process starved of CPU (CI runs the slow tier beside) may poll only after the
    # second cell finished too: then the table may have ended, and the rerun reuses both
    if len(done) == 2:
        assert proc.returncode in (0, 3, -signal.SIGKILL)
    elif sig == signal.SIGINT:
        assert proc.returncode == 3
        assert stderr.decode().splitlines()[-1] == (
            "error: interrupted; the partial report is kept in the run folder"
        )
        partial = read_table(out)
        assert partial.status == "incomplete"
        assert [c.status for c in partial.cells] == ["ok", "incomplete"]
    else:
        assert proc.returncode == -signal.SIGKILL
    if sig == signal.SIGKILL:
        deadline = time.monotonic() + 120  # orphaned workers finish their task, see EOF, exit
        while _holders(out) and time.monotonic() < deadline:
            time.sleep(0.2)
    result = CliRunner().invoke(cli, table_args(models[:1], out, "--jobs", "1"))
    assert result.exit_code == 0, result.stderr
    table = read_table(out)
    assert table.status == "complete" and table.reused == done
    assert [(c.status, c.reused) for c in table.cells] == [("ok", True), ("ok", len(done) == 2)]
    assert result.stderr.splitlines()[0].endswith("(reused)")


# -- usage errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--models", "mobilenetv2", "--frameworks", "onnx,tflite"],
            "error: the zoo offers mobilenetv2 in keras, tf, torch, none of which is in "
            "--frameworks onnx,tflite; add one of keras, tf, torch to --frameworks",
        ),
        (
            ["--models", "mobilenetv2", "--frameworks", "torch,caffe"],
            "error: unknown framework 'caffe'; use one of: keras, tf, tflite, onnx, torch",
        ),
        (
            ["--models", "nosuchnet"],
            "error: unknown model 'nosuchnet'; use a zoo name (mobilenetv2, resnet101, "
            "inceptionv3, convnext_tiny, efficientnetv2_b0, efficientnet_lite0, "
            "timm:<any timm model>) or a path to a model file",
        ),
        (
            ["--models", "mobilenetv2,mobilenetv2"],
            "error: two models would share the table block 'mobilenetv2'; give each model "
            "once, and model files distinct names",
        ),
        (
            ["--models", "mobilenetv2", "--preprocess", "mine"],
            "error: Invalid value for '--preprocess': 'mine' is not one of 'source', 'target'. "
            "(see convdiff table --help)",
        ),
    ],
)
def test_bad_usage(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["table", *args, "--out", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "t").exists()


# -- scheduling ---------------------------------------------------------------------------------


def test_memory_estimates_from_the_measured_facts() -> None:
    assert estimate_gb("resnet101", ["tf2onnx", "onnx2torch"]) == 13.4
    assert estimate_gb("inceptionv3", ["tf2onnx"]) == 7.6
    assert estimate_gb("inceptionv3", ["torch.onnx.export", "onnx2keras", "TFLiteConverter"]) == 4.0
    assert estimate_gb("mobilenetv2", ["TFLiteConverter"]) == 3.0
    assert estimate_gb("mobilenetv2", ["tf2onnx", "onnx2torch"]) == 3.0
    assert estimate_gb("efficientnet_lite0", ["torch.onnx.export"]) == 3.0
    assert estimate_gb("somenet", ["onnx2torch"]) == 3.0
    assert estimate_gb("tiny", ["onnx2torch"], is_file=True) == 1.0


def test_memory_total_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:         1000 kB\n")
    assert memory_total_gb(str(meminfo)) == 24.0


def _job(name: str, group: str, gb: float) -> Job[str]:
    return Job(name, group, gb)


def test_pick_keeps_the_budget_and_one_cell_per_group() -> None:
    a1, a2 = _job("a1", "resnet101/keras", 13.4), _job("a2", "resnet101/keras", 4.0)
    b1, c1 = _job("b1", "mobilenetv2/torch", 3.0), _job("c1", "inceptionv3/tf", 7.6)
    pending = {"resnet101/keras": [a1, a2], "mobilenetv2/torch": [b1], "inceptionv3/tf": [c1]}
    assert pick(pending, [], jobs=3, budget_gb=18.0) is a1
    assert pick(pending, [a1], jobs=3, budget_gb=18.0) is b1  # a2: same group; c1: too big
    assert pick(pending, [a1, b1], jobs=3, budget_gb=18.0) is None
    assert pick(pending, [b1], jobs=3, budget_gb=18.0) is a1
    assert pick(pending, [b1], jobs=1, budget_gb=18.0) is None  # --jobs 1
    assert pick(pending, [], jobs=3, budget_gb=10.0) is a1  # bigger than the budget: alone
    assert pick(pending, [a1], jobs=3, budget_gb=10.0) is None


# -- --preprocess target --------------------------------------------------------------------------


@pytest.mark.workers
def test_table_passes_target_preprocessing(models: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "t"
    args = ["table", "--models", str(models[0]), "--frameworks", "onnx,torch", "--limit", "2"]
    args += ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--preprocess", "target"])
    assert result.exit_code == 0, result.stderr
    cell = out / "cells" / "tiny" / "onnx-torch"
    report = RunReport.from_json((cell / "report.json").read_text())
    assert report.preprocessing["target"]["origin"] == (
        "the source's (no customary torch spec known for tiny)"
    )
    target = {k: v for k, v in report.preprocessing["target"].items() if k != "origin"}
    assert target == {k: v for k, v in report.preprocessing.items() if k != "target"}
    assert read_table(out).options["preprocess"] == "target"


# -- an interrupted cell resumes its inference pass ----------------------------------------------


@pytest.mark.workers
def test_a_cell_left_unfinished_resumes_its_inference_pass(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    """The table redoes a cell without a final report, and its run resumes the pass at the
    first batch the interrupted attempt did not finish (70 images: two batches of 64)."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(70):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            images / f"{i:02d}.png"
        )
    out = tmp_path / "t"
    args = ["table", "--models", str(models[0]), "--frameworks", "onnx,torch"]
    args += ["--data", str(images), "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    first = CliRunner().invoke(cli, [*args, "--quiet"])
    assert first.exit_code == 0, first.stderr
    cell = out / "cells" / "tiny" / "onnx-torch"
    before = RunReport.from_json((cell / "report.json").read_text())
    assert before.stream["batches"] == 2 and "resumed_at_batch" not in before.stream
    # as if the table had been stopped after the cell's first batch
    state = json.loads((cell / "outputs" / "stream.json").read_text())
    (cell / "outputs" / "stream.json").write_text(json.dumps({**state, "batches_done": 1}))
    (cell / "report.json").write_text(
        json.dumps({**json.loads((cell / "report.json").read_text()), "status": "incomplete"})
    )
    again = CliRunner().invoke(cli, [*args, "--quiet"])
    assert again.exit_code == 0, again.stderr
    after = RunReport.from_json((cell / "report.json").read_text())
    assert after.stream["resumed_at_batch"] == 2
    assert after.chain[0].agreement == before.chain[0].agreement
    table = read_table(out)
    assert [c.key for c in table.cells] == ["tiny/onnx-torch"] and table.reused == []
