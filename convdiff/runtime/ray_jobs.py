"""Run jobs as Ray tasks on a Ray cluster: the `--executor ray` of `convdiff table` and `check`.

Why Ray and not more threads: one machine cannot hold a big table (tf2onnx on ResNet101 alone
takes 13 GB), and a cluster scheduler already knows how to place work by memory. Each job is a
task that asks for one CPU and its memory estimate (:func:`convdiff.core.jobs.estimate_gb`) as
Ray's ``memory`` resource, so Ray never packs more estimated memory on a node than it has. Jobs
of one group still run one after another (the next is submitted when the previous finished):
they share cache entries, which live on a path every node sees.

A task whose worker dies (killed, out of memory, its node lost) is a result, not a lost job:
``on_lost`` turns the job and a one-line reason into the caller's result type. Ray is imported
only here and only when a command asks for it (the ``ray`` extra); the orchestrator still
imports no framework, and the task itself runs the same code as the local executor, whose
frameworks run in worker processes of their own on the node.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from convdiff.core.errors import ConvdiffError
from convdiff.core.jobs import Interrupted, Job

T = TypeVar("T")
R = TypeVar("R")

INSTALL_FIX = "install the ray extra here and on every node: pip install 'convdiff[ray]'"
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before calling it unreachable
CANCEL_GRACE = 15.0  # seconds tasks get to stop (and stop their workers) after Ctrl-C
LOCAL_OBJECT_STORE = 256 * 2**20  # a local cluster's object store: results are small records
GiB = 2**30


def import_ray() -> Any:
    """The ray module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConvdiffError("--executor ray needs the ray package", INSTALL_FIX) from None
    return ray


def check_address(address: str) -> None:
    """Refuse an address Ray cannot use, and one nobody answers at, before ``ray.init``: Ray
    itself retries an unreachable cluster for minutes, printing warnings, instead of failing.

    Accepted: ``auto`` (a cluster `ray start` runs on this machine), ``HOST:PORT`` (the head's
    GCS, port 6379 by default) and ``ray://HOST:PORT`` (Ray Client, port 10001 by default)."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    fix = "pass --address auto, HOST:PORT of the head node (ray start --head), or ray://HOST:PORT"
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if parts.scheme not in ("gcs", "ray") or not host or port is None:
        raise ConvdiffError(f"--address {address!r} is not a Ray cluster address", fix)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConvdiffError(
            f"cannot reach the Ray cluster at {address}: {reason}",
            "start it (ray start --head on the head node) or fix --address",
        ) from None


def connect(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start a local one (Ray's default: the cluster
    named by RAY_ADDRESS or one `ray start` runs here, else a new one with this machine's CPUs).
    Returns whether this call connected (and so should disconnect); an existing connection of
    this process (a test's own ``ray.init``) is used as it is."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = dict(
        include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False
    )
    if address:
        check_address(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConvdiffError(
                f"cannot connect to the Ray cluster at {address}: {first}",
                "check --address and that this machine's ray version is the cluster's",
            ) from None
        return True
    ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=LOCAL_OBJECT_STORE, **quiet)
    return True


def largest_node_memory(ray: Any) -> int:
    """Bytes of the ``memory`` resource of the cluster's biggest live node."""
    sizes = [n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")]
    return int(max(sizes, default=0))


def memory_bytes(estimate_gb: float, largest: int) -> int:
    """A job's Ray ``memory`` request: its estimate, but never more than the biggest node has
    (such a job would wait forever as infeasible); at that size it runs alone on that node, as
    the local scheduler runs a job bigger than its budget alone."""
    wanted = int(estimate_gb * GiB)
    return min(wanted, largest) if largest > 0 else wanted


class Groups:
    """The jobs in their groups: the first job of every group may start at once, each next
    one when the previous of its group finished (they share cache entries)."""

    def __init__(self, work: Sequence[Job[T]]) -> None:
        self.waiting: dict[str, list[Job[T]]] = {}
        for job in work:
            self.waiting.setdefault(job.group, []).append(job)

    def first(self) -> list[Job[T]]:
        return [jobs.pop(0) for jobs in self.waiting.values() if jobs]

    def after(self, job: Job[T]) -> Job[T] | None:
        jobs = self.waiting.get(job.group)
        return jobs.pop(0) if jobs else None


def lost_reason(exc: BaseException, ray: Any) -> str:
    """One line saying why a task gave no result: how its worker died, or what it raised."""
    errors = ray.exceptions

    def first_line(error: BaseException) -> str:
        text = str(error).strip()
        return text.splitlines()[0] if text else type(error).__name__

    if isinstance(exc, errors.OutOfMemoryError):
        return "Ray worker died: killed by Ray's memory monitor (its node ran out of memory)"
    if isinstance(exc, errors.NodeDiedError | errors.LocalRayletDiedError):
        return f"Ray worker died: its node died ({first_line(exc)})"
    if isinstance(exc, errors.WorkerCrashedError):
        return (
            "Ray worker died: the worker process exited while running the task (killed, out "
            "of memory, or crashed)"
        )
    if isinstance(exc, errors.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        return f"Ray task failed: {type(cause).__name__}: {first_line(cause)}"
    return f"Ray worker died: {type(exc).__name__}: {first_line(exc)}"


def _call(run_one: Callable[[Any], Any], item: Any) -> Any:
    """The task body: what the local executor calls on a thread, called on a node."""
    return run_one(item)


def run_jobs_on_ray(
    work: Sequence[Job[T]],
    run_one: Callable[[T], R],
    *,
    on_lost: Callable[[T, str], R],
    address: str | None = None,
    on_done: Callable[[Job[T], R], None] | None = None,
    on_interrupt: Callable[[], None] | None = None,
    name: Callable[[T], str] | None = None,
) -> list[tuple[Job[T], R]]:
    """Run every job as a Ray task; results in finishing order, as :func:`run_jobs` gives them.

    ``run_one`` and the items are pickled to the nodes: ``run_one`` must be a module-level
    function (or a partial of one) that every node can import, with picklable arguments.
    A task that fails without a result becomes ``on_lost(item, reason)``. ``name`` names a
    task (Ray shows it in its process title, ``ray::<name>``, and its dashboard).

    Ctrl-C: calls ``on_interrupt``, asks the running tasks to stop (they get KeyboardInterrupt
    and :data:`CANCEL_GRACE` seconds to kill their own workers), then kills those that did not,
    and raises :class:`Interrupted` carrying what finished.
    """
    ray = import_ray()
    if not work:  # every cell reused: no cluster to start or reach
        return []
    connected_here = connect(ray, address)
    results: list[tuple[Job[T], R]] = []
    running: dict[Any, Job[T]] = {}  # by ObjectRef
    try:
        largest = largest_node_memory(ray)
        task = ray.remote(_call)
        function = ray.put(run_one)
        groups = Groups(work)

        def submit(job: Job[T]) -> None:
            options: dict[str, Any] = dict(
                num_cpus=1, memory=memory_bytes(job.estimate_gb, largest), max_retries=0
            )
            if name is not None:
                options["name"] = name(job.item)
            running[task.options(**options).remote(function, job.item)] = job

        def collect(ref: Any) -> Job[T]:
            job = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                result = on_lost(job.item, lost_reason(exc, ray))
            results.append((job, result))
            if on_done is not None:
                on_done(job, result)
            return job

        try:
            for job in groups.first():
                submit(job)
            while running:  # short waits: Ctrl-C stays prompt
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    following = groups.after(collect(ref))
                    if following is not None:
                        submit(following)
        except KeyboardInterrupt:
            if on_interrupt is not None:
                on_interrupt()
            _cancel(ray, running, results, on_done)
            raise Interrupted(results) from None
    finally:
        if connected_here:
            ray.shutdown()
    return results


def _cancel(
    ray: Any,
    running: dict[Any, Job[T]],
    results: list[tuple[Job[T], R]],
    on_done: Callable[[Job[T], R], None] | None,
) -> None:
    """Stop the running tasks: politely, then by force; keep the results that still came."""
    for ref in running:
        ray.cancel(ref, force=False)
    deadline = time.monotonic() + CANCEL_GRACE
    while running and time.monotonic() < deadline:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for ref in ready:
            job = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError:  # cancelled, or died while stopping: nothing to keep
                continue
            results.append((job, result))
            if on_done is not None:
                on_done(job, result)
    for ref in running:
        ray.cancel(ref, force=True)


__all__ = [
    "INSTALL_FIX",
    "Groups",
    "check_address",
    "connect",
    "import_ray",
    "largest_node_memory",
    "lost_reason",
    "memory_bytes",
    "run_jobs_on_ray",
]
