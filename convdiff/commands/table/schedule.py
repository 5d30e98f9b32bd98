"""Which table cells may run at the same time: a thread per cell, within a memory budget.

A cell is one `convdiff run`; its peak memory is dominated by the biggest converter of its
chain (tf2onnx on ResNet101 takes 13.4 GB), so the scheduler keeps the sum of the running cells'
estimates under the budget and lets a cell bigger than the whole budget run alone. Cells of one
*group* (same model, same source) build the same source artifact and share intermediate hops
in the cache, so they run one after another: two of them at once would race on one cache entry.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Peak memory (GB) of one cell, from DESIGN.md's measured facts, keyed by (model, tool);
# "*" matches any model or tool. A cell's estimate is the largest entry its chain hits.
MEMORY_GB: dict[tuple[str, str], float] = {
    ("resnet101", "tf2onnx"): 13.4,
    ("inceptionv3", "tf2onnx"): 7.6,
    ("mobilenetv2", "TFLiteConverter"): 3.0,  # the low end of the converter's 2.7-4 GB
    ("*", "TFLiteConverter"): 4.0,
    ("mobilenetv2", "*"): 3.0,
    ("resnet101", "*"): 4.0,
    ("inceptionv3", "*"): 4.0,
    ("efficientnet_lite0", "*"): 3.0,
}
ZOO_DEFAULT_GB = 3.0  # a zoo model the table does not know
FILE_DEFAULT_GB = 1.0  # a user's model file: runtimes and converters of a small graph


def estimate_gb(model: str, tools: Sequence[str], is_file: bool = False) -> float:
    """Estimated peak memory of a cell converting ``model`` with ``tools`` (its chain)."""
    if is_file:
        return FILE_DEFAULT_GB
    found = [MEMORY_GB.get((model, "*"), ZOO_DEFAULT_GB)]
    for tool in tools:
        found.append(MEMORY_GB.get((model, tool), MEMORY_GB.get(("*", tool), 0.0)))
    return max(found)


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


@dataclass(frozen=True)
class Job(Generic[T]):
    item: T
    group: str  # jobs of one group run one after another, in order
    estimate_gb: float


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


class Interrupted(Exception):
    """Raised by :func:`run_jobs` after the user interrupted it and the running jobs ended."""

    def __init__(self, results: list) -> None:
        super().__init__("interrupted")
        self.results = results


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
