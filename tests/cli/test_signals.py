"""SIGTERM (a timeout, a cancelled CI job) and SIGHUP (a closed terminal) end a command as
Ctrl-C does: exit 3, the partial report kept, and no worker process left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.tiny.onnx_models import tiny_classifier

pytestmark = pytest.mark.workers
TASK_MARKER = b"[convdiff.runtime.child] task"


def _tagged(tag: str) -> list[int]:
    """Processes whose environment carries ``tag``: the command and every worker it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _interrupt(args: list[str], out: Path, sig: signal.Signals) -> tuple[int, str, list[int]]:
    """Start ``convdiff ARGS``, send ``sig`` once a worker runs a task; the exit code, stderr
    and the tagged processes still alive a moment later."""
    tag = f"CONVDIFF_TEST_TAG={uuid.uuid4().hex}"
    env = {**os.environ, tag.split("=")[0]: tag.split("=")[1]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convdiff", *args, "--out", str(out), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not any(TASK_MARKER in log.read_bytes() for log in (out / "logs").glob("*.log")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    time.sleep(0.5)
    return proc.returncode, stderr.decode(), _tagged(tag)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_run_ends_its_workers_and_keeps_its_report(tmp_path: Path, sig) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    args = ["run", str(model), "--dst", "torch", "--no-cache"]
    code, stderr, alive = _interrupt(args, tmp_path / "run", sig)
    assert (code, alive) == (3, [])
    assert stderr.endswith("error: interrupted; the partial report is kept in the run folder\n")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["status"], report["partial"]) == ("incomplete", True)
    assert report["notes"][-1].startswith(f"run stopped early: KeyboardInterrupt: {sig.name}")


def test_localize_keeps_a_partial_report(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    code, stderr, alive = _interrupt(
        ["localize", str(model), str(model)], tmp_path / "loc", signal.SIGTERM
    )
    assert (code, alive) == (3, [])
    report = json.loads((tmp_path / "loc" / "report.json").read_text())
    assert report["partial"] is True
    assert report["notes"][-1] == (
        "interrupted: KeyboardInterrupt: SIGTERM; the stages that ran are kept"
    )
