"""Test-process shortcuts for worker tasks the tests call again and again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convdiff.runtime.pool import WorkerPool


def convert(
    pool: WorkerPool, src: str, dst: str, path: str | Path, out: Path, worker: str = "tf",
    **options: Any,
) -> str:  # fmt: skip
    """Convert ``path`` with convdiff's converter for ``src -> dst`` in ``worker``; the new
    file's path (a failed conversion fails the test with the tool's message)."""
    outcome = pool.call(
        worker,
        "convdiff.runtime.tasks:convert",
        src=src,
        dst=dst,
        src_path=str(path),
        out_dir=str(out),
        options=options,
    )
    assert outcome, outcome.message
    return outcome.value["path"]
