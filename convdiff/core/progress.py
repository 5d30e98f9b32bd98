"""Progress lines on stderr for long steps, kept apart from the results printed on stdout."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Progress:
    """Prints ``[3/7] converting keras -> tflite ... 41.2 s`` as steps start and end.

    On a terminal the elapsed time ticks in place; in a log (CI) one line is printed when a step
    ends, plus a reminder every ``quiet_every`` seconds while a long step runs.
    """

    total: int = 0
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    enabled: bool = True
    quiet_every: float = 60.0
    _done: int = 0
    _last_reminder: float = 0.0

    @contextmanager
    def step(self, label: str) -> Iterator[Progress]:
        self._done += 1
        self._label = f"[{self._done}/{self.total}] {label}" if self.total else label
        self._started = time.perf_counter()
        self._last_reminder = 0.0
        self._write(f"{self._label} ...", final=False)
        self.result = "done"
        try:
            yield self
        except BaseException:
            self.result = "failed"
            raise
        finally:
            elapsed = time.perf_counter() - self._started
            self._write(f"{self._label} ... {self.result} ({elapsed:.1f} s)", final=True)

    def tick(self, elapsed: float) -> None:
        """Called by the worker pool while a task runs."""
        if not self.enabled:
            return
        if self._is_tty():
            self._write(f"{self._label} ... {elapsed:.0f} s", final=False)
        elif elapsed - self._last_reminder >= self.quiet_every:
            self._last_reminder = elapsed
            self._write(f"{self._label} ... still running ({elapsed:.0f} s)", final=True)

    def update(self, detail: str) -> None:
        """Say how far the running step is (``1,216/50,000 images, 212 img/s, ETA 4 min``): in
        place on a terminal, at most every ``quiet_every`` seconds in a log."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._started
        if self._is_tty():
            self._write(f"{self._label} ... {detail}", final=False)
        elif elapsed - self._last_reminder >= self.quiet_every:
            self._last_reminder = elapsed
            self._write(f"{self._label} ... {detail}", final=True)

    def _is_tty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def _write(self, text: str, final: bool) -> None:
        if not self.enabled:
            return
        if self._is_tty():
            end = "\n" if final else ""
            self.stream.write(f"\r\033[K{text}{end}")
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()
