"""Content-addressed cache of built and converted models.

A conversion of InceptionV3 takes minutes and gigabytes; the same conversion with the same
tool versions and options gives the same file. Keys hash everything that decides the
output: the parent artifact's key, the tool and its versions, the options. An entry is
complete only once its ``entry.json`` exists (written last), so a killed run leaves no entry
that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class ArtifactCache:
    root: Path
    enabled: bool = True

    def lookup(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The cached artifact and its metadata, or None."""
        if not self.enabled:
            return None
        entry = self.root / key
        meta_file = entry / "entry.json"
        if not meta_file.exists():
            return None
        meta = json.loads(meta_file.read_text())
        path = entry / meta["name"]
        return (path, meta) if path.exists() else None

    def store(self, key: str, artifact: Path, meta: dict[str, Any]) -> Path:
        """Copy an artifact into the cache; returns the cached path."""
        if not self.enabled:
            return artifact
        entry = self.root / key
        if entry.exists():
            shutil.rmtree(entry)
        entry.mkdir(parents=True)
        target = entry / artifact.name
        copy_artifact(artifact, target)
        (entry / "entry.json").write_text(json.dumps({**meta, "name": artifact.name}, indent=2))
        return target


def copy_artifact(src: Path, dst: Path) -> None:
    """Hard-link when possible (same filesystem, no extra space), else copy."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
