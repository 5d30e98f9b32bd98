"""Which table cells may run at the same time: a thread per cell, within a memory budget.

A cell is one `convdiff run`; its peak memory is estimated by :func:`convdiff.core.jobs.estimate_gb`
(the biggest converter of its chain), so the scheduler keeps the sum of the running cells'
estimates under the budget and lets a cell bigger than the whole budget run alone. Cells of one
*group* (same model, same source) run one after another (:class:`convdiff.core.jobs.Job`).
The Ray executor (:mod:`convdiff.runtime.ray_jobs`) follows the same rules on a cluster.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from convdiff.core.jobs import MEMORY_GB, Interrupted, Job, estimate_gb

T = TypeVar("T")
R = TypeVar("R")


def memory_total_gb(meminfo: str = "/proc/meminfo") -> float:
    """MemTotal of this machine in GB (GiB, as /proc/meminfo counts kB)."""
    with open(meminfo) as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    raise RuntimeError(f"no MemTotal line in {meminfo}")


def default_budget_gb() -> float:
    """75% of the machine's memory: room for the OS and the orchestrator itself."""
    return round(0.75 * memory_total_gb(), 1)


def pick(
    pending: dict[str, list[Job[T]]],
    running: Sequence[Job[T]],
    jobs: int,
    budget_gb: float,
) -> Job[T] | None:
    """The next job that may start now, or None; groups are tried in their insertion order.

    A job starts when fewer than ``jobs`` run, no job of its group runs, and the running
    estimates plus its own fit the budget; a job bigger than the budget starts only when
    nothing else runs (it runs alone). Smaller jobs may overtake a big one that waits.
    """
    if len(running) >= jobs:
        return None
    busy = {job.group for job in running}
    used = sum(job.estimate_gb for job in running)
    for group, waiting in pending.items():
        if not waiting or group in busy:
            continue
        job = waiting[0]
        if not running or used + job.estimate_gb <= budget_gb:
            return job
    return None


def run_jobs(
    work: Sequence[Job[T]],
    run_one: Callable[[T], R],
    *,
    jobs: int,
    budget_gb: float,
    on_done: Callable[[Job[T], R], None] | None = None,
    on_interrupt: Callable[[], None] | None = None,
) -> list[tuple[Job[T], R]]:
    """Run every job on worker threads under :func:`pick`'s rules; results in finishing order.

    Ctrl-C reaches the main thread only: it stops starting jobs, calls ``on_interrupt`` (which
    should make the running jobs end, e.g. by killing their worker processes), waits for them,
    and raises :class:`Interrupted` carrying what finished. Threads are daemons so that a
    second Ctrl-C or an error cannot leave the interpreter waiting on them at exit.
    """
    pending: dict[str, list[Job[T]]] = {}
    for job in work:
        pending.setdefault(job.group, []).append(job)
    running: dict[int, tuple[Job[T], threading.Thread]] = {}  # by id(job)
    finished: queue.Queue[tuple[Job[T], R | None, BaseException | None]] = queue.Queue()
    results: list[tuple[Job[T], R]] = []

    def target(job: Job[T]) -> None:
        try:
            finished.put((job, run_one(job.item), None))
        except BaseException as exc:  # handed to the main thread, which re-raises it
            finished.put((job, None, exc))

    def collect(timeout: float) -> None:
        job, result, error = finished.get(timeout=timeout)
        running.pop(id(job), None)
        if error is not None:
            raise error
        results.append((job, result))  # type: ignore[arg-type]
        if on_done is not None:
            on_done(job, result)  # type: ignore[arg-type]

    try:
        while running or any(pending.values()):
            jobs_now = [job for job, _ in running.values()]
            while (job := pick(pending, jobs_now, jobs, budget_gb)) is not None:
                pending[job.group].pop(0)
                thread = threading.Thread(target=target, args=(job,), daemon=True)
                running[id(job)] = (job, thread)
                jobs_now.append(job)
                thread.start()
            with contextlib.suppress(queue.Empty):  # short waits: Ctrl-C stays prompt
                collect(timeout=0.5)
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        deadline = time.monotonic() + 120.0
        alive = lambda: any(t.is_alive() for _, t in running.values())  # noqa: E731
        while (alive() or not finished.empty()) and time.monotonic() < deadline:
            try:
                collect(timeout=0.5)
            except queue.Empty:
                pass
            except Exception:  # a job that failed while being stopped: nothing to keep
                pass
        raise Interrupted(results) from None
    return results


__all__ = [
    "MEMORY_GB",
    "Interrupted",
    "Job",
    "default_budget_gb",
    "estimate_gb",
    "memory_total_gb",
    "pick",
    "run_jobs",
]
