"""The worker machinery: results, exceptions, segfaults and timeouts all come back as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from convdiff.runtime.pool import WorkerPool

pytestmark = pytest.mark.workers


@pytest.fixture()
def workers(tmp_path: Path):
    with WorkerPool(tmp_path / "logs", timeout=30) as pool:
        yield pool


def test_value_comes_back_and_worker_is_reused(workers: WorkerPool) -> None:
    outcome = workers.call("onnx", "tests.tiny.worker_funcs:add", a=2, b=3)
    assert outcome.ok and outcome.value == 5
    first = workers.call("onnx", "tests.tiny.worker_funcs:pid").value
    assert workers.call("onnx", "tests.tiny.worker_funcs:pid").value == first


def test_kinds_never_share_a_process(workers: WorkerPool) -> None:
    tf_pid = workers.call("tf", "tests.tiny.worker_funcs:pid").value
    torch_pid = workers.call("torch", "tests.tiny.worker_funcs:pid").value
    assert tf_pid != torch_pid


def test_exception_is_data_and_worker_survives(workers: WorkerPool) -> None:
    before = workers.call("onnx", "tests.tiny.worker_funcs:pid").value
    outcome = workers.call("onnx", "tests.tiny.worker_funcs:fail")
    assert not outcome
    assert outcome.failure == "exception"
    assert outcome.error_type == "ValueError"
    assert outcome.message == "the tool said no | second line of its message"
    assert "Traceback" in outcome.traceback
    assert workers.call("onnx", "tests.tiny.worker_funcs:pid").value == before


def test_segfault_is_recorded_and_next_task_gets_a_new_worker(workers: WorkerPool) -> None:
    before = workers.call("tf", "tests.tiny.worker_funcs:pid").value
    outcome = workers.call("tf", "tests.tiny.worker_funcs:segfault")
    assert outcome.failure == "died"
    assert outcome.message.startswith("worker killed by SIGSEGV (exit -11)")
    assert "about to dereference NULL" in outcome.message
    after = workers.call("tf", "tests.tiny.worker_funcs:pid")
    assert after.ok and after.value != before


def test_timeout_kills_the_worker(workers: WorkerPool) -> None:
    outcome = workers.call("litert", "tests.tiny.worker_funcs:sleep", seconds=30, timeout=1)
    assert outcome.failure == "timeout"
    assert outcome.message == "no result after 1 s (killed)"
    assert 1 <= outcome.wall_seconds < 5
    assert workers.call("litert", "tests.tiny.worker_funcs:add", a=1, b=1).value == 2


def test_non_json_value_is_a_task_failure(workers: WorkerPool) -> None:
    outcome = workers.call("onnx", "tests.tiny.worker_funcs:not_json")
    assert outcome.failure == "exception"
    assert outcome.error_type == "TypeError"


def test_fresh_worker_is_closed_after_its_task(workers: WorkerPool) -> None:
    kept = workers.call("onnx", "tests.tiny.worker_funcs:pid").value
    fresh = workers.call("onnx", "tests.tiny.worker_funcs:pid", fresh=True).value
    assert fresh != kept
    assert workers.call("onnx", "tests.tiny.worker_funcs:pid").value not in (kept, fresh)


def test_unknown_kind_is_refused(workers: WorkerPool) -> None:
    with pytest.raises(ValueError, match="unknown worker kind 'jax'"):
        workers.call("jax", "tests.tiny.worker_funcs:pid")


def test_prestarted_worker_answers_the_next_call_not_the_warm_up(workers: WorkerPool) -> None:
    workers.prestart("torch", "tests.tiny.worker_funcs:sleep", seconds=0.5)
    first = workers.call("torch", "tests.tiny.worker_funcs:add", a=20, b=22)
    assert first.ok and first.value == 42
    assert workers.call("torch", "tests.tiny.worker_funcs:add", a=1, b=2).value == 3
