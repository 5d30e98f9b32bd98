"""The Ray executor's own rules, without a cluster: the memory each task asks for, the order of
a group's jobs, the addresses refused before Ray is asked, and the one line that says how a
task's worker died (on Ray's real exception types). The cluster runs are in
tests/commands/table/test_ray.py."""

from __future__ import annotations

import socket

import pytest

from convdiff.core.errors import ConvdiffError
from convdiff.core.jobs import Job
from convdiff.runtime.ray_jobs import GiB, Groups, check_address, lost_reason, memory_bytes

ray = pytest.importorskip("ray")


def test_memory_request_is_the_estimate_capped_at_the_biggest_node() -> None:
    assert memory_bytes(13.4, 24 * GiB) == int(13.4 * GiB) == 14388140441
    assert memory_bytes(1.0, 24 * GiB) == GiB
    assert memory_bytes(13.4, 8 * GiB) == 8 * GiB  # runs alone on the biggest node
    assert memory_bytes(3.0, 0) == 3 * GiB  # no node reports memory: ask for the estimate


def test_groups_release_a_job_when_the_previous_of_its_group_finished() -> None:
    a1, a2, a3 = (
        Job("a1", "resnet101/keras", 13.4),
        Job("a2", "resnet101/keras", 4.0),
        Job("a3", "resnet101/keras", 4.0),
    )
    b1, c1 = Job("b1", "mobilenetv2/torch", 3.0), Job("c1", "inceptionv3/tf", 7.6)
    groups = Groups([a1, b1, a2, c1, a3])
    assert groups.first() == [a1, b1, c1]
    assert groups.after(b1) is None
    assert groups.after(a1) is a2
    assert groups.after(c1) is None
    assert groups.after(a2) is a3
    assert groups.after(a3) is None
    assert groups.first() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FIX = "pass --address auto, HOST:PORT of the head node (ray start --head), or ray://HOST:PORT"


@pytest.mark.parametrize(
    "address", ["nonsense", "http://head:6379", "head:port", "ray://", ":6379"]
)
def test_an_address_that_is_not_one(address: str) -> None:
    with pytest.raises(ConvdiffError) as caught:
        check_address(address)
    assert str(caught.value) == f"--address {address!r} is not a Ray cluster address; {FIX}"


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_nobody_answers_at_fails_at_once(scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{_closed_port()}"
    with pytest.raises(ConvdiffError) as caught:
        check_address(address)
    assert str(caught.value) == (
        f"cannot reach the Ray cluster at {address}: Connection refused; "
        "start it (ray start --head on the head node) or fix --address"
    )


def test_auto_and_a_listening_address_pass() -> None:
    check_address("auto")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_address(f"127.0.0.1:{server.getsockname()[1]}")


def test_how_a_worker_died_in_one_line() -> None:
    errors = ray.exceptions
    assert lost_reason(errors.WorkerCrashedError(), ray) == (
        "Ray worker died: the worker process exited while running the task (killed, out of "
        "memory, or crashed)"
    )
    assert lost_reason(errors.OutOfMemoryError("Task was killed due to ..."), ray) == (
        "Ray worker died: killed by Ray's memory monitor (its node ran out of memory)"
    )
    assert lost_reason(errors.NodeDiedError("node 1a2b is dead\nmore"), ray) == (
        "Ray worker died: its node died (node 1a2b is dead)"
    )
    raised = errors.RayTaskError("_call", "Traceback ...", ModuleNotFoundError("no convdiff"))
    assert lost_reason(raised, ray) == "Ray task failed: ModuleNotFoundError: no convdiff"
    assert lost_reason(errors.TaskCancelledError(), ray).startswith(
        "Ray worker died: TaskCancelledError: "
    )
