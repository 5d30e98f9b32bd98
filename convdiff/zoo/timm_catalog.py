"""timm's architectures as the catalog sees them, without importing timm (nor torch).

``timm:<name>`` names any architecture of ``timm.list_models()``. What the catalog needs before a
worker starts -- is the name real, how is the model fed, where are its pretrained weights -- is
read from ``convdiff/data/timm_models.json``, a table that ``scripts/make_timm_table.py`` writes
from the pinned timm (each name's default pretrained config, the one ``timm.create_model(name,
pretrained=True)`` loads); a worker test checks it against the installed timm.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from convdiff.core.errors import UnknownModelError

PREFIX = "timm:"
TABLE = Path(__file__).resolve().parent.parent / "data" / "timm_models.json"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader reads, in order


@dataclass(frozen=True)
class TimmEntry:
    """One architecture's default pretrained config (timm's ``PretrainedCfg``, the fields used)."""

    name: str
    height: int
    width: int
    interpolation: str
    crop_pct: float
    crop_mode: str  # center | squash | border
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    tag: str
    hf_hub_id: str  # "" when the weights are not on the Hugging Face hub
    url: str  # the legacy download URL ("" when none)

    @property
    def pretrained(self) -> bool:
        return bool(self.hf_hub_id or self.url)


@functools.cache
def table() -> tuple[str, dict[str, list]]:
    """The timm version the table was made with, and its rows by name."""
    data = json.loads(TABLE.read_text(encoding="utf-8"))
    return data["timm"], data["models"]


def timm_version() -> str:
    return table()[0]


def is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX)


def entry(name: str) -> TimmEntry:
    """The row of ``timm:<arch>`` (or ``<arch>``), or a one-line error with close names."""
    arch = name.removeprefix(PREFIX)
    version, rows = table()
    row = rows.get(arch)
    if row is None:
        base, _, tag = arch.partition(".")
        if tag and base in rows:
            raise UnknownModelError(
                f"timm:{arch} names a pretrained tag; the zoo builds each timm architecture with "
                f"its default weights ({base}.{rows[base][8]})",
                f"use timm:{base}, or --weights PATH to a {base} weights file",
            )
        close = difflib.get_close_matches(arch, list(rows), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}? " if close else ""
        raise UnknownModelError(
            f"unknown timm model {arch!r}: not among the {len(rows)} architectures of timm "
            f"{version}",
            f"{hint}see timm.list_models()",
        )
    h, w, interpolation, crop_pct, crop_mode, mean, std, classes, tag, hub_id, url = row
    return TimmEntry(
        arch, h, w, interpolation, crop_pct, crop_mode, tuple(mean), tuple(std), classes, tag,
        hub_id, url,
    )  # fmt: skip


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as huggingface_hub computes it: $HF_HUB_CACHE, $HF_HOME/hub,
    $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub."""
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if "HF_HOME" in os.environ:
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return Path(xdg) / "huggingface" / "hub"


def hf_snapshots(hub_id: str) -> Path:
    """The folder whose revisions hold a hub repository's cached files."""
    return hf_cache_dir() / f"models--{hub_id.replace('/', '--')}" / "snapshots"


def hf_cached_file(hub_id: str) -> Path | None:
    """A cached weights file of ``hub_id`` (safetensors first, as timm reads them), or None."""
    folder = hf_snapshots(hub_id)
    if not folder.is_dir():
        return None
    for name in HF_FILES:
        found = sorted(folder.glob(f"*/{name}"))
        if found:
            return found[0]
    return None
