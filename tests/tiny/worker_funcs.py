"""Plain-Python task functions for testing the worker machinery itself (no framework needed)."""

from __future__ import annotations

import ctypes
import os
import time


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def fail() -> None:
    raise ValueError("the tool said no\nsecond line of its message")


def segfault() -> None:
    print("about to dereference NULL", flush=True)
    ctypes.string_at(0)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def not_json() -> object:
    return object()


def user_error() -> None:
    from convdiff.core.errors import ConvdiffError

    raise ConvdiffError("weights file missing", "place it in ~/.keras/models")
