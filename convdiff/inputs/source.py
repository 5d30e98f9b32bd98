"""Resolve what the user named as the model: a zoo entry or a model file, and its framework."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convdiff.core.errors import ConvdiffError, UnknownModelError
from convdiff.frameworks import detect_framework, framework


@dataclass(frozen=True)
class SourceSpec:
    name: str  # zoo name, or the file's stem
    framework: str
    file: Path | None = None  # the user's model file; None for a zoo model

    @property
    def is_zoo(self) -> bool:
        return self.file is None


def resolve_source(model: str, src: str | None) -> SourceSpec:
    """A zoo name (``--src`` picks its framework) or a model file (framework from its suffix)."""
    from convdiff.zoo import is_zoo_name, zoo_listing, zoo_model

    if src is not None:
        framework(src)
    path = Path(model).expanduser()
    if is_zoo_name(model):
        entry = zoo_model(model)
        if src is None:
            raise ConvdiffError(
                f"--src is needed with the zoo model {model}",
                f"add --src with one of: {', '.join(entry.frameworks)}",
            )
        entry.variant(src)  # says which frameworks offer it
        return SourceSpec(name=model, framework=src)
    if path.exists():
        detected = detect_framework(path)
        if src is not None and src != detected and {src, detected} != {"keras", "tf"}:
            raise ConvdiffError(
                f"{path.name} is a {framework(detected).title} model, not {src}",
                f"drop --src or pass --src {detected}",
            )
        return SourceSpec(name=path.stem or path.name, framework=src or detected, file=path)
    looks_like_file = bool(path.suffix) or "/" in model
    if looks_like_file:
        raise ConvdiffError(f"model file {model} does not exist", "check the path")
    raise UnknownModelError(
        f"unknown model {model!r}",
        f"use a zoo name ({zoo_listing()}) or a path to a model file",
    )
