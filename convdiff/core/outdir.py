"""The output folder of a command: created, checked writable, and free of a stale report.

Why here: every command writes a folder (run, localize, repair, table, check) and each needs
the same promise: either the folder can be written, or the user gets one line saying which
folder and what to do, before any work starts.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from convdiff.core.errors import OutputDirError

DEFAULT_ROOT = Path("convdiff-runs")


def prepare_out_dir(out: Path | None, name: str, report: str = "report.json") -> Path:
    """Create the folder (``./convdiff-runs/<name>-<time>`` when ``out`` is None), or say why
    it cannot be written; an old ``report`` in it is removed, so it never passes for this
    command's. Returns the absolute path."""
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = DEFAULT_ROOT / f"{name}-{stamp}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / ".convdiff-write-test"
        probe_file.write_text("ok")
        probe_file.unlink()
    except OSError as exc:
        raise OutputDirError(
            f"cannot write the output folder {out}: {exc.strerror or exc}",
            "pass --out with a folder you can write",
        ) from None
    (out / report).unlink(missing_ok=True)
    return out.resolve()


__all__ = ["prepare_out_dir"]
