"""Model files are data: which ones convdiff may load in a way that runs code they carry.

Why: Keras Lambda layers, pickled torch modules and the pickled payloads of a .pt2 archive run
arbitrary Python when they load, and users feed convdiff models downloaded from model hubs. So
the frameworks load in their safe modes (Keras ``safe_mode=True``, ``torch.load(weights_only=
True)``), and a file that needs more is refused with :class:`UnsafeModelError` unless

- the user typed ``--trust-model-code`` (the workers then see ``CONVDIFF_TRUST_MODEL_CODE=1``),
  or
- convdiff wrote the file itself: every artifact a worker writes (a conversion, a zoo build, a
  repaired model) has its SHA-256 recorded in a registry folder under the cache
  (:func:`record_written`); a file of the same bytes is trusted, a changed one is not. onnx2keras'
  Lambda layers are convdiff's own output and load; the same file edited by someone else does not.

No framework is imported here: the workers call it around their loads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from convdiff.core.cache import default_cache_dir
from convdiff.core.errors import UnsafeModelError

TRUST_ENV = "CONVDIFF_TRUST_MODEL_CODE"
TRUST_FLAG = "--trust-model-code"


def refuse(path: str | Path, what: str) -> UnsafeModelError:
    """The one-line refusal: which file, what in it would run, and the opt-in."""
    return UnsafeModelError(
        f"{Path(path).name} holds {what}: loading it would run code from the file, and convdiff "
        "runs no code from model files it did not write",
        f"if you trust this file, pass {TRUST_FLAG}",
    )


def trust_env(trust: bool) -> dict[str, str]:
    """The environment a worker pool needs for the user's choice."""
    return {TRUST_ENV: "1"} if trust else {}


def registry() -> Path:
    """Where the digests of the files convdiff wrote are kept (one empty file per digest)."""
    return Path(os.environ.get("CONVDIFF_TRUSTED_DIR") or default_cache_dir() / "trusted")


def record_written(path: str | Path) -> None:
    """Remember a model file (or SavedModel folder) convdiff has just written as its own."""
    folder = registry()
    folder.mkdir(parents=True, exist_ok=True)
    for digest in _digests(Path(path)):
        (folder / digest).touch()


def may_run_code(path: str | Path) -> bool:
    """May ``path`` be loaded in a way that runs code it carries?"""
    if os.environ.get(TRUST_ENV) == "1":
        return True
    digests = _digests(Path(path))
    return bool(digests) and all((registry() / d).exists() for d in digests)


def _digests(path: Path) -> list[str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out = []
    for file in files:
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out.append(digest.hexdigest())
    return out


__all__ = [
    "TRUST_ENV",
    "TRUST_FLAG",
    "UnsafeModelError",
    "may_run_code",
    "record_written",
    "refuse",
    "registry",
    "trust_env",
]
