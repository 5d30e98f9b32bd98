"""Model files that run code when they load are refused, unless the user trusts them.

Each hostile file (tests/tiny/hostile.py) creates a marker file when its code runs: a refusal
must come before any of it runs, and ``--trust-model-code`` is the one way to run it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.runtime.pool import WorkerPool

pytestmark = pytest.mark.workers
HOSTILE = "tests.tiny.hostile"
SIZE = ["--input-size", "8,8"]
REFUSAL = (
    "error: {name} holds {what}: loading it would run code from the file, and convdiff runs no "
    "code from model files it did not write; if you trust this file, pass --trust-model-code\n"
)
CASES = {
    "keras": ("tf", "lambda_keras", "evil.keras", "a Lambda layer (Python bytecode)", []),
    "pt": (
        "torch",
        "pickled_module",
        "evil.pt",
        "a pickled Python module",
        ["--input-size", "8,8"],
    ),
    "pt2": ("torch", "pickled_pt2", "evil.pt2", "pickled Python objects among its weights", []),
}


def _hostile(pool: WorkerPool, case: str, folder: Path) -> tuple[Path, Path, list[str], str]:
    kind, builder, name, what, extra = CASES[case]
    model, marker = folder / name, folder / "marker"
    outcome = pool.call(kind, f"{HOSTILE}:{builder}", path=str(model), marker=str(marker))
    assert outcome, outcome.message
    assert not marker.exists()
    return model, marker, extra, REFUSAL.format(name=name, what=what)


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_refuses_a_model_that_runs_code(pool: WorkerPool, tmp_path: Path, case: str) -> None:
    model, marker, extra, refusal = _hostile(pool, case, tmp_path)
    result = CliRunner().invoke(
        cli, ["run", str(model), "--dst", "onnx", *extra, "--out", str(tmp_path / "r"), "--quiet"]
    )
    assert (result.exit_code, result.stderr) == (2, refusal)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["localize", "repair"])
def test_localize_and_repair_refuse_it_too(pool: WorkerPool, tmp_path: Path, command: str) -> None:
    model, marker, _, refusal = _hostile(pool, "pt2", tmp_path)
    args = [command, str(model), str(model), "--out", str(tmp_path / "o"), "--quiet"]
    if command == "repair":
        args += ["-o", str(tmp_path / "fixed.pt2")]
    result = CliRunner().invoke(cli, args)
    assert (result.exit_code, result.stderr) == (2, refusal)
    assert not marker.exists()


def test_trust_model_code_is_the_opt_in(pool: WorkerPool, tmp_path: Path) -> None:
    model, marker, _, _ = _hostile(pool, "keras", tmp_path)
    args = ["run", str(model), "--dst", "tflite", "--out", str(tmp_path / "r"), "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--trust-model-code", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert marker.exists()  # the user asked for it: the Lambda ran
