"""The child side of :mod:`convdiff.runtime.pool`: ``python -m convdiff.runtime.child KIND``.

Reads one JSON request per line on stdin (``{"func": "module:function", "kwargs": {...}}``),
calls the function and writes one JSON reply per line to the pipe named by
``CONVDIFF_RESULT_FD``. stdout and stderr belong to the frameworks and go to the log file.
An exception in a task is a reply (``ok: false``), not the end of the worker.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import traceback
from typing import Any

MARKER = "[convdiff.runtime.child] task"


def _peak_rss_mb() -> float:
    """High-water mark of this process and its children, in MB (ru_maxrss is in KB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _resolve(func: str) -> Any:
    module_name, _, attr = func.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        value = _resolve(request["func"])(**request.get("kwargs", {}))
        json.dumps(value)  # fail here, inside the task, if the value is not JSON
        reply: dict[str, Any] = {"ok": True, "value": value}
    except BaseException as exc:  # a task failure is data for the caller
        if isinstance(exc, KeyboardInterrupt):
            raise
        reply = {
            "ok": False,
            "error_type": type(exc).__name__,
            "message": _one_line(str(exc)) or type(exc).__name__,
            "traceback": traceback.format_exc(),
        }
    reply["seconds"] = time.perf_counter() - started
    reply["peak_rss_mb"] = _peak_rss_mb()
    return reply


def _one_line(text: str, limit: int = 500) -> str:
    """Converter errors span many lines; the report wants the informative part, kept short.

    MLIR diagnostics (TFLiteConverter) bury the reason after a long ``loc(...)``: keep the
    headline and the text after the location of each ``error:`` line.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [line for line in lines if "error: " in line]
    if errors:
        reasons = []
        for line in errors:
            reason = line.split("error: ", 1)[1]
            if reason.startswith("loc(") and "): " in reason:
                reason = reason.rsplit("): ", 1)[1]
            if reason not in reasons:
                reasons.append(reason)
        head = lines[0].split("<unknown>")[0].rstrip(" .:")
        # the converter lists the offending op with its operand types: often the real reason
        signatures = [line for line in lines if line.startswith("tf.") and ") -> (" in line]
        detail = f" [{signatures[0].split(' : ')[0]}]" if signatures else ""
        return f"{head}: {'; '.join(reasons)}{detail}"[:limit]
    if len(lines) <= 3:
        return " | ".join(lines)[:limit]
    return f"{lines[0]} ... {lines[-1]}"[:limit]


def main() -> None:
    result = os.fdopen(int(os.environ["CONVDIFF_RESULT_FD"]), "w")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        print(f"{MARKER} {request['func']}", flush=True)
        reply = _handle(request)
        result.write(json.dumps(reply) + "\n")
        result.flush()


if __name__ == "__main__":
    main()
