"""The folders convdiff writes: created, checked writable, and never a place where it deletes
what it did not make.

Why here: every command writes a folder (run, localize, repair, table, check) and each needs
the same promises: either the folder can be written, or the user gets one line saying which
folder and what to do, before any work starts; a report left by an earlier command never
passes for this one's; and a file the user keeps in the folder is never deleted: convdiff
removes only folders that carry its own marker (:func:`own_dir`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path

from convdiff.core.errors import OutputDirError

DEFAULT_ROOT = Path("convdiff-runs")
MARKER = ".convdiff-made"  # in every folder convdiff made and may empty again


def prepare_out_dir(out: Path | None, name: str, report: str = "report.json") -> Path:
    """Create the folder (``./convdiff-runs/<name>-<time>`` when ``out`` is None), or say why
    it cannot be written; an old convdiff ``report`` in it is removed, so it never passes for
    this command's (a file of that name convdiff did not write is refused). Returns the
    absolute path."""
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = DEFAULT_ROOT / f"{name}-{stamp}"
    try:
        make_writable(out)
    except OSError as exc:
        raise OutputDirError(
            f"cannot write the output folder {out}: {exc.strerror or exc}",
            "pass --out with a folder you can write",
        ) from None
    stale = out / report
    if stale.exists() or stale.is_symlink():
        if not is_convdiff_report(stale):
            raise OutputDirError(
                f"{stale} is not a report convdiff wrote, and this command would replace it",
                "pass --out with another folder",
            )
        stale.unlink()
    return out.resolve()


def make_writable(folder: Path) -> None:
    """Create ``folder`` and write a file in it, so that a folder that cannot be used fails
    here, before any work (an ``OSError`` naming why)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".convdiff-write-test-{os.getpid()}-{uuid.uuid4().hex}"  # threads too
    probe.write_text("ok")
    probe.unlink()


def is_convdiff_report(path: Path) -> bool:
    """Does ``path`` hold a JSON report convdiff wrote (it names its schema and version)?"""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "schema_version" in data and "convdiff_version" in data


def own_dir(path: Path) -> Path:
    """An empty folder at ``path`` that convdiff owns: made with the marker, or emptied when it
    carries the marker already. A folder there without the marker holds the user's files and
    is refused, never emptied."""
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not (path / MARKER).is_file():
            raise OutputDirError(
                f"{path} holds files convdiff did not write, and a run needs that folder",
                "pass --out with another folder, or move those files",
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("convdiff made this folder and may empty it again\n")
    return path


def keep_own_dir(path: Path) -> Path:
    """A folder at ``path`` that convdiff owns, kept as it is when it carries the marker (what
    an interrupted command left there is for it to resume), made with the marker when missing;
    a folder without the marker is refused, as by :func:`own_dir`."""
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not (path / MARKER).is_file():
            raise OutputDirError(
                f"{path} holds files convdiff did not write, and a run needs that folder",
                "pass --out with another folder, or move those files",
            )
        return path
    return own_dir(path)


def remove_own_dir(path: Path) -> None:
    """Remove ``path`` if convdiff made it (it carries the marker); leave anything else."""
    if path.is_dir() and not path.is_symlink() and (path / MARKER).is_file():
        shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "MARKER",
    "is_convdiff_report",
    "keep_own_dir",
    "make_writable",
    "own_dir",
    "prepare_out_dir",
    "remove_own_dir",
]
