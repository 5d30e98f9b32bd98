"""Shared fixtures. The test process, like convdiff's orchestrator, never imports TF or torch:
framework code runs in workers, and helpers that build tiny models live in ``tests/tiny/``,
which workers import through PYTHONPATH."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from convdiff.runtime.pool import WorkerPool
from tests.helpers import ROOT

os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    """One worker pool for the whole session: each framework is imported once."""
    with WorkerPool(tmp_path_factory.mktemp("worker-logs"), timeout=900) as workers:
        yield workers


@pytest.fixture(autouse=True, scope="session")
def _no_frameworks_in_test_process() -> Iterator[None]:
    yield
    import sys

    leaked = [m for m in ("tensorflow", "torch", "keras") if m in sys.modules]
    assert not leaked, f"the test process imported {leaked}; run framework code in a worker"
