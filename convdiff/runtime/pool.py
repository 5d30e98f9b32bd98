"""Run framework work in child processes, so that a crash is data and not the end of the run.

Why a child process: TensorFlow and torchvision segfault when imported into one process in the
wrong order; tf2onnx can take 13 GB; converters hang or abort. The orchestrating process (and the
test process) therefore never imports a framework. It sends *tasks* -- an importable
``"module:function"`` with JSON keyword arguments -- to a long-lived worker of a named *kind*
("tf", "torch", "onnx", "litert", "tvm"). One kind never shares a process with another, and a
worker is reused for the next task of its kind, so the framework import is paid once per run.

Every outcome is a :class:`TaskOutcome`: a value, or a failure with its kind (``exception``,
``timeout``, ``died``, ``memory``), message and the tail of the worker's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from convdiff.core.errors import ConvdiffError, is_user_error
from convdiff.core.options import DEFAULT_TIMEOUT

WORKER_KINDS = ("tf", "torch", "onnx", "litert", "tvm")

# Quiet the frameworks: their logs go to the worker's log file anyway, but CUDA builds of torch
# probe for GPUs and TF prints notices on every start.
# oneDNN itself stays on, as TF's x86 default: without it TF has no NCHW Conv2D on the CPU,
# and the channels-first Keras models onnx2keras writes cannot run ("The Conv2D op currently
# only supports the NHWC tensor format on the CPU").
_WORKER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONUNBUFFERED": "1",
    "PYTHONWARNINGS": "ignore",
    "KERAS_BACKEND": "tensorflow",
}


@dataclass(frozen=True)
class TaskOutcome:
    """What one task gave back: its JSON value, or why it has none."""

    ok: bool
    value: Any = None
    seconds: float = 0.0  # time inside the task function, measured in the worker
    wall_seconds: float = 0.0  # time seen by the caller, worker start-up included
    peak_rss_mb: float = 0.0  # the worker's memory high-water mark after the task
    failure: str = ""  # exception | timeout | died | memory
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    log_path: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def raise_user_error(self) -> None:
        """A task that failed on the user's input (a ConvdiffError raised in the worker, such
        as a model file that would run code) is that same one-line error here."""
        if not self.ok and self.failure == "exception" and is_user_error(self.error_type):
            raise ConvdiffError(self.message)


@dataclass
class _Worker:
    kind: str
    proc: subprocess.Popen
    result_fd: int
    log_path: Path
    buffer: bytes = b""
    tasks_done: int = 0
    pending: int = 0  # replies of warm-up requests still to be read and dropped


@dataclass
class WorkerPool:
    """Long-lived worker processes, one per kind, created on first use.

    ``recycle_mb``: a worker whose resident memory exceeds this after a task is closed, so a
    13 GB conversion does not keep its memory through the rest of the run.
    ``max_memory_mb``: a task whose worker exceeds this is killed and reported as ``memory``.
    """

    log_dir: Path
    timeout: float = DEFAULT_TIMEOUT
    max_memory_mb: float | None = None
    recycle_mb: float = 4096.0
    extra_env: dict[str, str] = field(default_factory=dict)
    warm_up_seconds: dict[str, float] = field(default_factory=dict, init=False)
    _workers: dict[str, _Worker] = field(default_factory=dict, init=False)
    _started: int = field(default=0, init=False)
    # every pool of this process that may have workers, for kill_all
    _live: ClassVar[weakref.WeakSet[WorkerPool]] = weakref.WeakSet()

    def __post_init__(self) -> None:
        WorkerPool._live.add(self)

    def __enter__(self) -> WorkerPool:
        return self

    def __hash__(self) -> int:  # a pool is itself: pools in a WeakSet are told apart by id
        return id(self)

    @classmethod
    def kill_all(cls) -> None:
        """Kill every worker (its whole process group) of every pool of this process at once,
        from any thread: on an interrupt, no worker may run on alone. A pool whose task was
        waiting sees its worker as ``died``."""
        for pool in list(cls._live):
            for worker in list(pool._workers.values()):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        kind: str,
        func: str,
        *,
        timeout: float | None = None,
        fresh: bool = False,
        on_tick: Callable[[float], None] | None = None,
        **kwargs: Any,
    ) -> TaskOutcome:
        """Run ``func(**kwargs)`` in the worker of ``kind`` and return its outcome.

        ``fresh`` runs the task in a new worker that is closed afterwards (for work that must
        not inherit or leave state). ``on_tick`` is called about twice a second while waiting,
        with the seconds elapsed, for progress displays.
        """
        if kind.partition("@")[0] not in WORKER_KINDS:
            raise ValueError(f"unknown worker kind {kind!r}; expected one of {WORKER_KINDS}")
        if fresh:
            self._close_worker(kind)
        started = time.perf_counter()
        worker = self._workers.get(kind) or self._start(kind)
        request = json.dumps({"func": func, "kwargs": kwargs}) + "\n"
        try:
            assert worker.proc.stdin is not None
            worker.proc.stdin.write(request.encode())
            worker.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died(worker, started)
        outcome = self._wait(worker, started, timeout or self.timeout, on_tick)
        if outcome.ok or outcome.failure == "exception":
            worker.tasks_done += 1
            if fresh or _rss_mb(worker.proc.pid) > self.recycle_mb:
                self._close_worker(kind)
        return outcome

    def prestart(self, kind: str, func: str, **kwargs: Any) -> None:
        """Start the worker of ``kind`` now and let it run ``func`` (say, a framework import)
        while the caller does other work; its reply is dropped. A failure here is not
        reported: the next real task of that kind meets it again and reports it."""
        if kind in self._workers:
            return
        worker = self._start(kind)
        try:
            assert worker.proc.stdin is not None
            worker.proc.stdin.write((json.dumps({"func": func, "kwargs": kwargs}) + "\n").encode())
            worker.proc.stdin.flush()
            worker.pending += 1
        except (BrokenPipeError, OSError):
            pass

    def close(self) -> None:
        for kind in list(self._workers):
            self._close_worker(kind)

    # -- internals -------------------------------------------------------------------------

    def _start(self, kind: str) -> _Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._started += 1
        log_path = self.log_dir / f"worker-{kind.replace('==', '-')}-{self._started}.log"
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **_WORKER_ENV, **self.extra_env, "CONVDIFF_RESULT_FD": str(write_fd)}
        python, path = _interpreter(kind)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH", "")) if p)
        if "@" in kind:  # a tool environment sees its own packages and convdiff, nothing else
            env["PYTHONPATH"] = path
            env.pop("PYTHONHOME", None)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [python, "-m", "convdiff.runtime.child", kind],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        os.close(write_fd)
        worker = _Worker(kind=kind, proc=proc, result_fd=read_fd, log_path=log_path)
        self._workers[kind] = worker
        return worker

    def _wait(
        self,
        worker: _Worker,
        started: float,
        timeout: float,
        on_tick: Callable[[float], None] | None,
    ) -> TaskOutcome:
        while True:
            elapsed = time.perf_counter() - started
            if b"\n" in worker.buffer:
                line, _, worker.buffer = worker.buffer.partition(b"\n")
                if worker.pending:
                    worker.pending -= 1  # a warm-up's reply: keep only its duration
                    reply = json.loads(line)
                    self.warm_up_seconds[worker.kind] = reply.get("seconds", 0.0)
                    continue
                return self._parse(worker, line, started)
            if elapsed > timeout:
                self._kill(worker)
                return self._failure(
                    worker, started, "timeout", f"no result after {timeout:.0f} s (killed)"
                )
            if self.max_memory_mb is not None and _rss_mb(worker.proc.pid) > self.max_memory_mb:
                self._kill(worker)
                return self._failure(
                    worker,
                    started,
                    "memory",
                    f"worker exceeded the memory limit of {self.max_memory_mb:.0f} MB (killed)",
                )
            ready, _, _ = select.select([worker.result_fd], [], [], 0.5)
            if ready:
                chunk = os.read(worker.result_fd, 1 << 20)
                if not chunk:
                    return self._died(worker, started)
                worker.buffer += chunk
            if on_tick is not None:
                on_tick(time.perf_counter() - started)

    def _parse(self, worker: _Worker, line: bytes, started: float) -> TaskOutcome:
        reply = json.loads(line)
        wall = time.perf_counter() - started
        common = {
            "seconds": reply.get("seconds", 0.0),
            "wall_seconds": wall,
            "peak_rss_mb": reply.get("peak_rss_mb", 0.0),
            "log_path": str(worker.log_path),
        }
        if reply["ok"]:
            return TaskOutcome(ok=True, value=reply["value"], **common)
        return TaskOutcome(
            ok=False,
            failure="exception",
            error_type=reply.get("error_type", ""),
            message=reply.get("message", ""),
            traceback=reply.get("traceback", ""),
            **common,
        )

    def _died(self, worker: _Worker, started: float) -> TaskOutcome:
        code = worker.proc.wait(timeout=30)
        if code < 0:
            reason = f"worker killed by {signal.Signals(-code).name} (exit {code})"
        else:
            reason = f"worker exited with code {code}"
        tail = _log_tail(worker.log_path)
        message = f"{reason}: {tail}" if tail else reason
        return self._failure(worker, started, "died", message)

    def _failure(self, worker: _Worker, started: float, failure: str, message: str) -> TaskOutcome:
        self._forget(worker)
        return TaskOutcome(
            ok=False,
            failure=failure,
            message=message,
            wall_seconds=time.perf_counter() - started,
            log_path=str(worker.log_path),
        )

    def _kill(self, worker: _Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()

    def _forget(self, worker: _Worker) -> None:
        if self._workers.get(worker.kind) is worker:
            del self._workers[worker.kind]
        with contextlib.suppress(OSError):
            os.close(worker.result_fd)
        if worker.proc.stdin is not None:
            with contextlib.suppress(OSError):
                worker.proc.stdin.close()

    def _close_worker(self, kind: str) -> None:
        worker = self._workers.get(kind)
        if worker is None:
            return
        self._forget(worker)
        # Every result is already on disk or in the reply; a framework's interpreter shutdown
        # (seconds for TensorFlow) is not worth waiting for.
        try:
            worker.proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            self._kill(worker)


def _interpreter(kind: str) -> tuple[str, str]:
    """The Python a worker of ``kind`` runs and the path that finds convdiff there.

    ``tf@onnx2tf==1.29.0`` runs in that tool environment (:mod:`convdiff.core.envs`), which
    the caller has built (``ensure_env``) before its first task."""
    _, _, env_name = kind.partition("@")
    if not env_name:
        return sys.executable, str(_package_root())
    from convdiff.core.envs import convdiff_path, find_env

    env = find_env(env_name)
    if env is None:
        raise ConvdiffError(
            f"the {env_name} environment is not built", f"run: convdiff env create {env_name}"
        )
    return str(env.python), str(convdiff_path(env))


def _package_root() -> Path:
    """The folder that holds the ``convdiff`` package, so workers import this very copy."""
    return Path(__file__).resolve().parents[2]


def _rss_mb(pid: int) -> float:
    """Current resident memory of a process in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _log_tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a worker log: usually the fatal message of a crash."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("[convdiff.runtime.child]")
    ]
    return " | ".join(kept[-lines:])[-600:]
