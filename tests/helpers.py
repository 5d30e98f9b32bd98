"""Test-process helpers shared by the test modules: the repository root, and shortcuts for the
worker tasks the tests call again and again (through :mod:`convdiff.runtime.client`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool

ROOT = Path(__file__).resolve().parent.parent  # the repository: convdiff/, tests/, models/


def convert(
    pool: WorkerPool, src: str, dst: str, path: str | Path, out: Path, worker: str = "tf",
    **options: Any,
) -> str:  # fmt: skip
    """Convert ``path`` with convdiff's converter for ``src -> dst`` in ``worker``; the new
    file's path (a failed conversion fails the test with the tool's message)."""
    outcome = client.convert(pool, worker, src, dst, path, out, options)
    assert outcome, outcome.message
    return outcome.value["path"]
