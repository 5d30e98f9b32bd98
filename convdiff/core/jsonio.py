"""Results as JSON: one convention for every command's report.

Why one: scripts and CI jobs read every report.json, and each command used to write its own
way (a ``write()`` that also rendered, a ``to_dict`` here, a hand-built dict there). A result
dataclass mixes in :class:`JsonResult` and gets ``to_dict``/``to_json``/``from_dict``/
``from_json``/``write``; nested dataclasses are rebuilt from their type hints, so what is read
back equals what was written. Files are replaced atomically: a reader never sees half a report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Self


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def from_dict(cls: type, data: Any) -> Any:
    """Rebuild a (nested) dataclass from what ``dataclasses.asdict`` made of it; keys the
    class does not know (a newer report) are ignored."""
    return _build(cls, data)


def _text(value: Any) -> str:
    """Bytes a damaged model file gave as a name, as text; anything else is a bug to see."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class JsonResult:
    """Mixin for result dataclasses: JSON out and back in, with the same types."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_text)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))

    def write(self, path: Path) -> None:
        """Write the JSON to ``path`` atomically."""
        write_atomic(path, self.to_json() + "\n")


def _build(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], data) if len(inner) == 1 else data
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: _build(hints[k], v) for k, v in data.items() if k in names})
    if origin is tuple:
        item = args[0] if args else Any
        return tuple(_build(item, v) for v in data)
    if origin is list:
        return [_build(args[0], v) for v in data]
    if origin is dict and len(args) == 2:
        return {k: _build(args[1], v) for k, v in data.items()}
    return data


__all__ = ["JsonResult", "from_dict", "write_atomic"]
