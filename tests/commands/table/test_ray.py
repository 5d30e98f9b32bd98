"""`convdiff table/check --executor ray`: usage errors before anything runs, and real tables on
a local Ray cluster: the same cells as the local executor, and a cell whose Ray worker is killed
while it runs is a crash cell that says so, not a lost cell.

The cluster tests run the two tiny ONNX files of tests/commands/table/test_flow.py (``tiny``
converts to torch and keras; ``reduce18`` crashes onnx2torch) on the first two sample images.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.table.flow import shared_paths, table
from convdiff.commands.table.types import TableConfig, TableReport
from tests.commands.table.test_flow import CELLS, table_args

MISSING = (
    "error: --executor ray needs the ray package; install the ray extra here and on every "
    "node: pip install 'convdiff[ray]'"
)
DIED = (
    "Ray worker died: the worker process exited while running the task (killed, out of "
    "memory, or crashed)"
)


@pytest.fixture(scope="module")
def models(tiny_onnx: Path, reduce18_onnx: Path) -> tuple[Path, Path]:
    return tiny_onnx, reduce18_onnx


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_config(folder: Path, model: Path) -> Path:
    config = folder / "check.toml"
    config.write_text(
        f'[defaults]\nlimit = 2\n\n[[conversion]]\nname = "tiny-torch"\nmodel = "{model}"\n'
        'dst = "torch"\n'
    )
    return config


# -- usage errors: one line, exit 2, no folder --------------------------------------------------


@pytest.mark.parametrize("command", ["table", "check"])
def test_without_ray_installed_the_option_names_the_extra(
    command: str, models: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "t"
    if command == "table":
        args = table_args(models, out, "--executor", "ray")
    else:
        args = ["check", str(_check_config(tmp_path, models[0])), "--out", str(out)]
        args += ["--executor", "ray"]
    result = CliRunner().invoke(cli, args)
    assert (result.exit_code, result.stderr.strip()) == (2, MISSING)
    assert not out.exists()


@pytest.mark.parametrize("command", ["table", "check"])
def test_bad_addresses(command: str, models: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "t"
    if command == "table":
        base = table_args(models, out)
    else:
        base = ["check", str(_check_config(tmp_path, models[0])), "--out", str(out)]
    port = _closed_port()
    cases = [
        (["--address", "auto"], "error: --address names a Ray cluster; add --executor ray"),
        (
            ["--executor", "ray", "--address", "head"],
            "error: --address 'head' is not a Ray cluster address; pass --address auto, "
            "HOST:PORT of the head node (ray start --head), or ray://HOST:PORT",
        ),
        (
            ["--executor", "ray", "--address", f"127.0.0.1:{port}"],
            f"error: cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused; "
            "start it (ray start --head on the head node) or fix --address",
        ),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(cli, [*base, *extra])
        assert (result.exit_code, result.stderr.strip()) == (2, message)
        assert not out.exists()


def test_paths_are_made_absolute_for_the_nodes(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_onnx.parent)
    config = TableConfig(
        models=(tiny_onnx.name, "mobilenetv2"),
        frameworks=("onnx", "torch"),
        out=Path("t"),
        cache_dir=Path("cache"),
        data=Path("images"),
        labels=Path("images/labels.txt"),
        executor="ray",
    )
    shared = shared_paths(config)
    here = tiny_onnx.parent.resolve()
    assert shared.models == (str(here / tiny_onnx.name), "mobilenetv2")
    assert (shared.out, shared.cache_dir) == (here / "t", here / "cache")
    assert (shared.data, shared.labels) == (here / "images", here / "images/labels.txt")


# -- on a local Ray cluster -----------------------------------------------------------------------


def _cells(out: Path) -> list[tuple]:
    """What must not depend on the executor: each cell's key, status, figures and crash."""
    report = TableReport.from_json((out / "table.json").read_text())
    assert report.status == "complete"
    return [
        (c.key, c.status, c.route, c.images, c.top1_discrepancy, c.top5_discrepancy,
         c.max_abs_diff, c.crash, c.run_dir)
        for c in report.cells
    ]  # fmt: skip


@pytest.mark.workers
def test_ray_table_has_the_cells_of_the_local_one(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    """No cluster running: the table starts a local one (this machine's CPUs) and stops it."""
    import ray

    local = CliRunner().invoke(cli, table_args(models, tmp_path / "local" / "t", "--jobs", "2"))
    assert local.exit_code == 3, local.stderr
    out = tmp_path / "ray" / "t"
    result = CliRunner().invoke(cli, [*table_args(models, out), "--executor", "ray"])
    assert result.exit_code == 3, result.stderr
    assert not ray.is_initialized()  # the cluster it started is shut down
    assert [c[0] for c in _cells(out)] == CELLS
    assert _cells(out) == _cells(tmp_path / "local" / "t")
    report = json.loads((out / "table.json").read_text())
    assert report["executor"] == "ray" and report["reused"] == []
    assert len(result.stderr.splitlines()) == 4  # one progress line per cell, nothing of Ray's


@pytest.fixture
def cluster() -> Iterator[None]:
    """A local Ray cluster this test process starts (the table uses it as it is)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


def _ray_worker(title: str) -> int | None:
    """The Ray worker process running the task named ``title`` (its process title)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0")[0].decode(errors="replace") == f"ray::{title}":
                return int(entry.name)
    return None


@pytest.mark.workers
def test_a_killed_ray_worker_is_a_crash_cell(
    cluster: None, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGKILL the worker running tiny onnx -> torch: that cell is a crash saying the worker
    died, the next cell of its group (onnx -> keras) still runs, the table is complete, and the
    next table redoes the killed cell only."""
    out = tmp_path / "t"
    config = TableConfig(
        models=(str(models[0]),),
        frameworks=("onnx", "torch", "keras"),
        limit=2,
        out=out,
        cache_dir=tmp_path / "cache",
        executor="ray",
    )
    finished: list[TableReport] = []
    runner = threading.Thread(target=lambda: finished.append(table(config, quiet=True)))
    runner.start()
    deadline = time.monotonic() + 120
    while (pid := _ray_worker("convdiff-cell tiny/onnx-torch")) is None:
        assert runner.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    runner.join(timeout=180)
    (report,) = finished
    killed, other = report.cells
    assert (killed.key, killed.status, killed.top1_discrepancy) == (
        "tiny/onnx-torch",
        "crash",
        None,
    )
    assert (killed.crash.stage, killed.crash.tool, killed.crash.failure) == ("run", "ray", "died")
    assert killed.crash.reason == DIED
    assert (other.key, other.status, other.top1_discrepancy) == ("tiny/onnx-keras", "ok", 0.0)
    written = TableReport.from_json((out / "table.json").read_text())
    assert written.status == "complete" and written.cells == report.cells
    assert report.exit_code == 3
    md = (out / "table.md").read_text()
    assert f"- onnx -> torch: crash in run (ray): {DIED}\n" in md

    again = table(config, quiet=True)  # the killed cell left no final report: redone
    assert [(c.key, c.status, c.reused) for c in again.cells] == [
        ("tiny/onnx-torch", "ok", False),
        ("tiny/onnx-keras", "ok", True),
    ]


@pytest.mark.workers
def test_ray_check_gives_the_local_verdicts_in_entry_order(
    cluster: None, models: tuple[Path, Path], tmp_path: Path
) -> None:
    """Three entries, two of one model (run one after another, sharing the cache): the same
    lines as the local check, in the config's order, whatever order the tasks finish in."""
    tiny, reduce18 = models
    config = tmp_path / "check.toml"
    config.write_text(
        "[defaults]\nlimit = 2\n\n"
        f'[[conversion]]\nname = "tiny-torch"\nmodel = "{tiny}"\ndst = "torch"\n\n'
        f'[[conversion]]\nname = "reduce18-torch"\nmodel = "{reduce18}"\ndst = "torch"\n\n'
        f'[[conversion]]\nname = "tiny-keras"\nmodel = "{tiny}"\ndst = "keras"\n'
    )
    runs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        args = ["check", str(config), "--out", str(out), "--quiet", "--executor", executor]
        result = CliRunner().invoke(
            cli, [*args, "--cache-dir", str(tmp_path / f"cache-{executor}")]
        )
        assert result.exit_code == 3, result.stdout + result.stderr
        runs[executor] = result.stdout.splitlines()[:-1]
        written = json.loads((out / "check.json").read_text())
        assert [e["name"] for e in written["entries"]] == [
            "tiny-torch",
            "reduce18-torch",
            "tiny-keras",
        ]
    assert runs["ray"] == runs["local"]
    assert [line.split()[0] for line in runs["ray"]] == ["PASS", "CRASH", "PASS"]


@pytest.mark.workers
def test_ctrl_c_stops_the_ray_tasks_and_writes_the_partial_table(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGINT once the first cell is in: the running tasks are cancelled (their cells marked
    unfinished in their folders), the partial table is written, exit 3, and the local cluster
    the table started is gone."""
    import subprocess

    from tests.helpers import ROOT

    out = tmp_path / "t"
    argv = [sys.executable, "-m", "convdiff.cli", *table_args(models, out), "--executor", "ray"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (out / "table.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3
    report = TableReport.from_json((out / "table.json").read_text())
    statuses = {c.key: c.status for c in report.cells}
    assert set(statuses.values()) <= {"ok", "crash", "incomplete"}
    if "incomplete" in statuses.values():  # a starved test process may see the table end
        assert stderr.decode().splitlines()[-1] == (
            "error: interrupted; the partial report is kept in the run folder"
        )
        assert report.status == "incomplete"
        assert report.notes == ["interrupted: unfinished cells are redone by the same command"]
    for cell in report.cells:
        if cell.status == "incomplete" and (out / cell.run_dir / "report.json").exists():
            run = json.loads((out / cell.run_dir / "report.json").read_text())
            assert run["status"] == "incomplete" and run["partial"] is True
    deadline = time.monotonic() + 30  # Ray's processes of that session (raylet, gcs, workers)
    while _in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _in_session(proc.pid) == []


def _in_session(sid: int) -> list[str]:
    """The command lines of the live processes of session ``sid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found
