"""Shared fixtures and the test tiers. The test process, like convdiff's orchestrator, never
imports TF or torch: framework code runs in workers, and helpers that build tiny models live in
``tests/tiny/``, which workers import through PYTHONPATH.

Tiers: a test that starts a worker process is marked ``workers`` (those of the session ``pool``
and the ``slow`` ones are marked here; a module or test that starts workers another way -- a
CLI run, a subprocess, its own :class:`WorkerPool` -- says so with ``pytest.mark.workers``), so
``pytest -m "not slow and not workers"`` runs the rest in well under a minute. A test that is
not marked ``workers`` and starts one anyway fails with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from convdiff.runtime.pool import WorkerPool
from tests.helpers import ROOT

os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)

UNMARKED_WORKER = "this test starts a worker process: mark it workers"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pool" in getattr(item, "fixturenames", ()) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.workers)


# The test being run (set up, called, torn down): a module or session fixture it sets up starts
# its workers in that test's name. And the tests not marked workers that tried to start one.
_running: list[pytest.Item] = []
_unmarked: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """The guard's verdict stands even where the code under test caught its AssertionError
    (the CLI reports it as an internal error, a table cell as an error, and so on)."""
    report = yield
    if item.nodeid in _unmarked and report.when == "call":
        if report.passed:
            report.outcome, report.longrepr = "failed", UNMARKED_WORKER
        else:
            report.sections.append(("workers guard", UNMARKED_WORKER))
    return report


@pytest.fixture(autouse=True, scope="session")
def _workers_only_in_marked_tests() -> Iterator[None]:
    """A worker started for a test not marked ``workers`` raises, there and then."""
    start = WorkerPool._start

    def guarded(self: WorkerPool, kind: str):  # the pool's private _Worker
        item = _running[-1] if _running else None
        if item is not None and item.get_closest_marker("workers") is None:
            _unmarked.add(item.nodeid)
            raise AssertionError(UNMARKED_WORKER)
        return start(self, kind)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WorkerPool, "_start", guarded)
        yield


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
