"""Content-addressed cache of built and converted models, that cannot serve a wrong file.

A conversion of InceptionV3 takes minutes and gigabytes; the same conversion with the same
tool versions and options gives the same file. Keys hash everything that decides the
output: the parent artifact's key, the tool and its versions, the options. An entry is
complete only once its ``entry.json`` exists (written last), so a killed run leaves no entry
that looks complete.

Why it checks what it serves: an entry's files can change after it was stored (a ``cp`` over
a run folder's copy once reached the cache through a hard link; a disk fills; a file is cut
short). ``entry.json`` records every file's size, mtime and SHA-256; a lookup compares size and
mtime (cheap, every time) and the digest when they differ. An entry that fails, or whose
``entry.json`` is unreadable, is dropped, with a note, and the work is done again. Run folders
get copies (a reflink where the filesystem has them), never links into the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convdiff.core.errors import ConvdiffError
from convdiff.core.outdir import make_writable

ENTRY = "entry.json"
FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write (btrfs, xfs)


def default_cache_dir() -> Path:
    env = os.environ.get("CONVDIFF_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convdiff"


def key_of(*parts: Any) -> str:
    """Stable key of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def file_digest(path: Path) -> str:
    """Hash of a model file or SavedModel folder's contents (names and bytes)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def _stamp(file: Path) -> dict[str, int]:
    status = file.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


@dataclass(frozen=True)
class ArtifactCache:
    root: Path
    enabled: bool = True
    notes: list[str] = field(default_factory=list)  # entries dropped, and why

    def check_writable(self) -> None:
        """Refuse, before any work, a cache folder that is a file or cannot be written."""
        if not self.enabled:
            return
        try:
            make_writable(self.root)
        except OSError as exc:
            raise ConvdiffError(
                f"cannot use the cache folder {self.root}: {exc.strerror or exc}",
                "pass --cache-dir with a folder you can write, or --no-cache",
            ) from None

    def lookup(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The cached artifact and its metadata, or None (a missing or bad entry)."""
        if not self.enabled:
            return None
        entry = self.root / key
        if not (entry / ENTRY).exists():
            return None
        try:
            meta = json.loads((entry / ENTRY).read_text())
            path = entry / meta["name"]
            files = meta["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = f"its {ENTRY} is unreadable or from an older convdiff ({type(exc).__name__})"
            return self._drop(entry, why)
        why = _changed(path, files)
        if why:
            return self._drop(entry, why)
        return path, meta

    def store(self, key: str, artifact: Path, meta: dict[str, Any]) -> Path:
        """Copy an artifact into the cache with its files' sizes, times and digests; returns
        the cached path."""
        if not self.enabled:
            return artifact
        entry = self.root / key
        if entry.exists():
            shutil.rmtree(entry)
        entry.mkdir(parents=True)
        target = entry / artifact.name
        copy_artifact(artifact, target)
        files = {
            str(f.relative_to(entry)): {**_stamp(f), "sha256": _sha256(f)} for f in _files(target)
        }
        record = {**meta, "name": artifact.name, "files": files}
        (entry / ENTRY).write_text(json.dumps(record, indent=2))
        return target

    def _drop(self, entry: Path, why: str) -> None:
        self.notes.append(f"cache: dropped the bad entry {entry.name} ({why}); made it again")
        shutil.rmtree(entry, ignore_errors=True)


def _changed(path: Path, files: dict[str, dict[str, Any]]) -> str:
    """Why the entry's files are not what was stored ('' when they are)."""
    entry = path.parent
    present = {str(f.relative_to(entry)) for f in _files(path)} if path.exists() else set()
    if present != set(files):
        return "its files are missing or others were added"
    for name, recorded in files.items():
        file = entry / name
        if _stamp(file) == {k: recorded[k] for k in ("size", "mtime_ns")}:
            continue
        if file.stat().st_size != recorded["size"] or _sha256(file) != recorded["sha256"]:
            return f"{name} changed after it was stored"
    return ""


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_artifact(src: Path, dst: Path) -> None:
    """An independent copy: a reflink where the filesystem shares blocks copy-on-write, else
    a plain copy. Never a hard link: writing to one name must not change the other."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_clone_or_copy)
    else:
        _clone_or_copy(str(src), str(dst))


def _clone_or_copy(src: str, dst: str) -> None:
    with open(src, "rb") as source, open(dst, "wb") as target:
        cloned = False
        with contextlib.suppress(OSError):
            fcntl.ioctl(target.fileno(), FICLONE, source.fileno())
            cloned = True
        if not cloned:
            shutil.copyfileobj(source, target, 1 << 20)
    shutil.copystat(src, dst)


__all__ = ["ArtifactCache", "copy_artifact", "default_cache_dir", "file_digest", "key_of"]
