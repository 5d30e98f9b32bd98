"""Registry of converter edges (src framework -> dst framework), and chains over them.

One file per tool; each registers its edges with :func:`converter`. The decorated function runs
only inside a worker of the declared kind, so converter modules import their tool *inside* the
function. Registering an edge twice is an error: an edge means one tool.

Converter function contract (child side)::

    def keras_to_tflite(src: Path, out_dir: Path, opts: ConvertOptions,
                        input_shape: list[int | None] | None) -> Path

It writes the converted model under ``out_dir`` and returns its path. ``input_shape`` is the
source model's input shape (batch first, in the source's own layout) for tools that need an
example input.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from convdiff.core.errors import UnsupportedPairError
from convdiff.frameworks import FRAMEWORKS, framework, package_version


@dataclass(frozen=True)
class ConverterInfo:
    src: str
    dst: str
    tool: str  # name of the tool as its users know it
    worker: str  # worker kind that runs it
    packages: tuple[str, ...]  # distributions whose versions identify the tool
    options: tuple[str, ...]  # ConvertOptions fields it reads
    func: str  # "module:function"

    def tool_version(self) -> str:
        """E.g. ``tf2onnx 1.17.0, tensorflow 2.21.0, onnx 1.23.2``: the tool, then what it uses."""
        return ", ".join(f"{p} {package_version(p)}" for p in self.packages)


CONVERTERS: dict[tuple[str, str], ConverterInfo] = {}

_MODULES = ("tflite_converter", "tf2onnx", "torch_onnx", "onnx2torch", "onnx2keras", "keras_export")


def converter(
    src: str,
    dst: str,
    *,
    tool: str,
    worker: str,
    packages: tuple[str, ...],
    options: tuple[str, ...] = (),
) -> Callable[[Callable], Callable]:
    """Register the decorated function as the converter of edge ``src -> dst``."""

    def register(func: Callable) -> Callable:
        key = (src, dst)
        if key in CONVERTERS:
            raise RuntimeError(f"converter edge {src} -> {dst} registered twice")
        CONVERTERS[key] = ConverterInfo(
            src, dst, tool, worker, packages, options, f"{func.__module__}:{func.__name__}"
        )
        return func

    return register


def load_all() -> dict[tuple[str, str], ConverterInfo]:
    """Import every converter module (cheap: tools are imported inside the functions)."""
    for name in _MODULES:
        importlib.import_module(f"convdiff.converters.{name}")
    return CONVERTERS


def find_chain(src: str, dst: str, via: tuple[str, ...] = ()) -> list[ConverterInfo]:
    """Shortest chain of edges from ``src`` to ``dst`` passing through ``via`` in order."""
    edges = load_all()
    for name in (src, dst, *via):
        framework(name)
    if src == dst and not via:
        raise UnsupportedPairError(f"source and target are both {src}", "choose a different --dst")
    stops = [src, *via, dst]
    chain: list[ConverterInfo] = []
    for start, goal in zip(stops, stops[1:], strict=False):
        leg = _shortest(edges, start, goal)
        if leg is None:
            raise UnsupportedPairError(
                f"no converter chain from {start} to {goal}",
                f"edges that exist: {', '.join(f'{a}->{b}' for a, b in edges)}",
            )
        chain.extend(leg)
    return chain


def _shortest(
    edges: dict[tuple[str, str], ConverterInfo], start: str, goal: str
) -> list[ConverterInfo] | None:
    """Breadth-first search; ties go to the edge registered first, so chains are stable."""
    previous: dict[str, ConverterInfo | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for (a, b), info in edges.items():
            if a == node and b not in previous:
                previous[b] = info
                queue.append(b)
    if goal not in previous or goal == start:
        return None
    path: list[ConverterInfo] = []
    node = goal
    while (info := previous[node]) is not None:
        path.append(info)
        node = info.src
    return path[::-1]


__all__ = ["CONVERTERS", "FRAMEWORKS", "ConverterInfo", "converter", "find_chain", "load_all"]
