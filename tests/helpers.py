"""Test-process helpers shared by the test modules: the repository root, and shortcuts for the
worker tasks the tests call again and again (through :mod:`convdiff.runtime.client`).

The tiny models themselves are built by ``tests/tiny/`` and shared as session fixtures
(``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.runtime import client
from convdiff.runtime.pool import TaskOutcome, WorkerPool

ROOT = Path(__file__).resolve().parent.parent  # the repository: convdiff/, tests/, models/


def ok(outcome: TaskOutcome) -> Any:
    """The value of a task that must succeed (a failed one fails the test with its reason)."""
    assert outcome, (
        f"{outcome.failure} {outcome.error_type}: {outcome.message}\n{outcome.traceback}"
    )
    return outcome.value


def convert(
    pool: WorkerPool, src: str, dst: str, path: str | Path, out: Path, worker: str = "tf",
    **options: Any,
) -> str:  # fmt: skip
    """Convert ``path`` with convdiff's converter for ``src -> dst`` in ``worker``; the new
    file's path (a failed conversion fails the test with the tool's message)."""
    outcome = client.convert(pool, worker, src, dst, path, out, options)
    assert outcome, outcome.message
    return outcome.value["path"]


def infer(
    pool: WorkerPool, framework: str, path: str | Path, inputs: str | Path, outputs: Path,
    **options: Any,
) -> np.ndarray:  # fmt: skip
    """Run the model at ``path`` on ``inputs`` in its framework's worker; its outputs (saved to
    ``outputs``). ``options``: the infer task's layout and batch_size."""
    ok(client.infer(pool, framework, path, inputs, outputs, **options))
    with np.load(outputs) as data:
        return data["y"]


def torch_images(path: Path, count: int) -> Path:
    """``count`` seeded NHWC images for the tiny 3x16x16 torch model (tests/tiny/torch_models.py),
    one tint each so that the classes differ."""
    rng = np.random.default_rng(0)
    tint = rng.uniform(-2, 2, size=(count, 1, 1, 3))
    x = (rng.normal(size=(count, 16, 16, 3)) + tint).astype(np.float32)
    np.savez(path, x=x)
    return path


def eager_outputs(pool: WorkerPool, images: Path) -> np.ndarray:
    """The tiny torch module's eager outputs on ``images``: what its saved forms must give."""
    out = images.parent / "eager.npz"
    task = "tests.tiny.torch_models:eager_outputs"
    ok(pool.call("torch", task, inputs=str(images), outputs=str(out)))
    with np.load(out) as data:
        return data["y"]


def patch_apply_twice(patch: str, target: Path, repaired: Path) -> None:
    """``convdiff patch apply`` of the patch repair wrote, twice, to a.<suffix> and b.<suffix>
    beside the repaired file: both runs give the very bytes repair wrote."""
    runner = CliRunner()
    a, b = (repaired.with_name(f"{name}{repaired.suffix}") for name in "ab")
    for out in (a, b):
        result = runner.invoke(cli, ["patch", "apply", patch, str(target), "-o", str(out)])
        assert result.exit_code == 0, result.output
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == repaired.read_bytes()
