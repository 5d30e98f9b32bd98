"""Registry of converter edges (src framework -> dst framework), and chains over them.

One file per tool; each registers its edges with :func:`converter`. The decorated function runs
only inside a worker of the declared kind, so converter modules import their tool *inside* the
function. An edge may be served by several tools (torch -> tflite: litert-torch, or the chain
through onnx2keras; onnx -> tflite: onnx2keras + TFLiteConverter, or onnx2tf): each tool has a
name users pass to ``--converter``. A tool registered with ``default=False`` is used only when
named (onnx2tf needs an environment of its own, built on first use). An edge from a framework
to itself is a *transform* (onnxruntime's quantizers): it is added at the end of a chain when
the option it is ``enabled_by`` is set.

Converter function contract (child side)::

    def keras_to_tflite(src: Path, out_dir: Path, opts: ConvertOptions,
                        input_shape: list[int | None] | None) -> Path

It writes the converted model under ``out_dir`` and returns its path. ``input_shape`` is the
source model's input shape (batch first, in the source's own layout) for tools that need an
example input. A converter that calibrates (full-integer quantization) also takes
``calibration: Path | None``: an .npz whose ``x`` holds the run's first preprocessed images
(at most :data:`CALIBRATION_IMAGES`), NHWC.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from convdiff.core.errors import ConvdiffError, UnsupportedPairError
from convdiff.core.options import ConvertOptions
from convdiff.frameworks import FRAMEWORKS, framework, package_version

# At most this many images calibrate a quantized model (the run's first ones, in its order, so
# the same run calibrates the same model and the cache key holds). The converter runs the float
# model once per image to record each tensor's range: TensorFlow's guide asks for "a few
# hundred" samples, and the ranges stop moving well before a 50,000-image folder is through.
CALIBRATION_IMAGES = 200


@dataclass(frozen=True)
class ConverterInfo:
    src: str
    dst: str
    tool: str  # name of the tool as its users know it
    worker: str  # worker kind that runs it
    packages: tuple[str, ...]  # distributions whose versions identify the tool
    options: tuple[str, ...]  # ConvertOptions fields it reads
    func: str  # "module:function"
    name: str = ""  # what --converter and --tool-version call it
    default: bool = True  # False: used only when --converter names it
    # tool environment it runs in: "" = convdiff's own; a tool name = that tool's environment at
    # its default release (find_chain makes it "onnx2tf==1.29.0", or --tool-version's release)
    env: str = ""
    enabled_by: str = ""  # a transform (src == dst) runs when this option is not "none"
    calibrate_when: tuple[str, ...] = ()  # "option=value": then it is given calibration images

    def tool_version(self) -> str:
        """E.g. ``tf2onnx 1.17.0, tensorflow 2.21.0, onnx 1.23.2``: the tool, then what it uses.

        A hop in a tool environment reads the versions recorded when the environment was built.
        """
        if self.env:
            from convdiff.core.envs import installed_versions

            versions = installed_versions(self.env)
            return ", ".join(f"{p} {versions.get(p, 'unknown')}" for p in self.packages)
        return ", ".join(f"{p} {package_version(p)}" for p in self.packages)

    @property
    def worker_kind(self) -> str:
        """The worker that runs it: ``tf``, or ``tf@tf2onnx==1.16.1`` in a tool environment."""
        return f"{self.worker}@{self.env}" if self.env else self.worker

    def needs_calibration(self, options: ConvertOptions) -> bool:
        """Whether these options make the tool calibrate on images (full-integer quantization)."""
        values = options.as_dict()
        return any(
            str(values[k]) == v for k, _, v in (c.partition("=") for c in self.calibrate_when)
        )


CONVERTERS: dict[tuple[str, str], list[ConverterInfo]] = {}

_MODULES = (
    "tflite_converter",
    "tf2onnx",
    "torch_onnx",
    "onnx2torch",
    "onnx2keras",
    "keras_export",
    "litert_torch",
    "onnx2tf",
    "ort_quantize",
)


def converter(
    src: str,
    dst: str,
    *,
    tool: str,
    worker: str,
    packages: tuple[str, ...],
    options: tuple[str, ...] = (),
    name: str = "",
    default: bool = True,
    env: str = "",
    enabled_by: str = "",
    calibrate_when: tuple[str, ...] = (),
) -> Callable[[Callable], Callable]:
    """Register the decorated function as converter ``name`` of edge ``src -> dst``."""

    def register(func: Callable) -> Callable:
        tools = CONVERTERS.setdefault((src, dst), [])
        label = name or packages[0]
        if any(t.name == label for t in tools):
            raise RuntimeError(f"converter {label} of edge {src} -> {dst} registered twice")
        if (src == dst) != bool(enabled_by):
            raise RuntimeError(f"{label}: an edge from a framework to itself needs enabled_by")
        tools.append(
            ConverterInfo(
                src,
                dst,
                tool,
                worker,
                packages,
                options,
                f"{func.__module__}:{func.__name__}",
                label,
                default,
                env,
                enabled_by,
                calibrate_when,
            )
        )
        return func

    return register


def load_all() -> dict[tuple[str, str], list[ConverterInfo]]:
    """Import every converter module (cheap: tools are imported inside the functions)."""
    for name in _MODULES:
        importlib.import_module(f"convdiff.converters.{name}")
    return CONVERTERS


def converter_names() -> list[str]:
    """Every tool name ``--converter`` accepts, in registration order."""
    return list(dict.fromkeys(t.name for tools in load_all().values() for t in tools))


def edge(src: str, dst: str, name: str | None = None) -> ConverterInfo:
    """The tool ``name`` of edge ``src -> dst`` (its default tool when ``name`` is None)."""
    tools = load_all().get((src, dst), [])
    for info in tools:
        if (name is None and info.default) or info.name == name:
            return info
    raise UnsupportedPairError(
        f"no converter {name or ''} for {src} -> {dst}".replace("  ", " "),
        f"tools for this edge: {', '.join(t.name for t in tools) or 'none'}",
    )


def find_chain(
    src: str, dst: str, via: tuple[str, ...] = (), options: ConvertOptions | None = None
) -> list[ConverterInfo]:
    """Shortest chain of edges from ``src`` to ``dst`` passing through ``via`` in order; of two
    equally short ones, the one that needs no tool environment built.

    ``options`` choose tools (``converters``: a named tool replaces the default tools of its
    edge and must be on the chain), their releases (``tool_versions``: such a hop runs in a
    tool environment) and transforms (``ort_quant``: quantize the ONNX target).
    """
    options = options or ConvertOptions()
    for name in (src, dst, *via):
        framework(name)
    chosen = _chosen_tools(options.converters)
    transforms = _transforms(dst, options)
    if src == dst and not via:
        if not transforms:
            raise UnsupportedPairError(
                f"source and target are both {src}", "choose a different --dst"
            )
        return _with_versions(transforms, options.tool_versions)
    edges = _usable_edges(chosen)
    chain = _through(edges, [src, *via, dst])
    for name in dict.fromkeys(info.name for info in chosen):
        if any(info.name == name for info in chain):
            continue
        # a named tool off the shortest route: go through one of its edges (a tool may serve
        # several: onnx2tf converts onnx -> tflite and onnx -> tf), the shortest way
        routes = [
            route for info in chosen if info.name == name
            if (route := _route_through(edges, src, info, dst)) is not None
        ]  # fmt: skip
        if routes and via:
            raise ConvdiffError(
                f"--converter {name} and --via {','.join(via)} choose different routes",
                "drop --via: the converter's own edge sets the route",
            )
        if routes:
            chain = min(routes, key=len)
    names = dict.fromkeys(info.name for info in chosen)
    missing = [name for name in names if not any(info.name == name for info in chain)]
    if missing:
        raise ConvdiffError(
            f"--converter {missing[0]} is not on any route from {src} to {dst} that passes "
            "each framework once",
            f"it converts {_describe(missing[0])}",
        )
    return _with_versions(chain + transforms, options.tool_versions)


def _route_through(
    edges: dict[tuple[str, str], ConverterInfo], src: str, info: ConverterInfo, dst: str
) -> list[ConverterInfo] | None:
    """The shortest chain from ``src`` to ``dst`` that takes edge ``info``; None if none
    does without converting back to a framework it left (onnx -> tflite -> onnx)."""
    try:
        route = _through(edges, [src, info.src]) + [info] + _through(edges, [info.dst, dst])
    except UnsupportedPairError:
        return None
    visited = [src, *(hop.dst for hop in route)]
    return route if len(set(visited)) == len(visited) else None


def _chosen_tools(names: tuple[str, ...]) -> list[ConverterInfo]:
    known = load_all()
    chosen = [t for tools in known.values() for t in tools if t.name in names and not t.enabled_by]
    unknown = [n for n in names if n not in {t.name for t in chosen}]
    if unknown:
        usable = [n for n in converter_names() if not _is_transform(n)]
        raise ConvdiffError(
            f"unknown --converter {unknown[0]!r}", f"use one of: {', '.join(usable)}"
        )
    return chosen


def _is_transform(name: str) -> bool:
    return any(t.name == name and t.enabled_by for tools in CONVERTERS.values() for t in tools)


def _describe(name: str) -> str:
    edges = [
        f"{t.src} -> {t.dst}" for tools in CONVERTERS.values() for t in tools if t.name == name
    ]
    return ", ".join(edges)


def _usable_edges(chosen: list[ConverterInfo]) -> dict[tuple[str, str], ConverterInfo]:
    """One tool per edge: the one the user named, else the edge's default tool."""
    usable: dict[tuple[str, str], ConverterInfo] = {}
    for key, tools in load_all().items():
        if key[0] == key[1]:
            continue
        named = [t for t in tools if t in chosen]
        defaults = [t for t in tools if t.default]
        if named or defaults:
            usable[key] = (named or defaults)[0]
    return usable


def _transforms(dst: str, options: ConvertOptions) -> list[ConverterInfo]:
    values = options.as_dict()
    found = []
    for tools in load_all().values():
        for info in tools:
            if info.enabled_by and values.get(info.enabled_by, "none") != "none":
                if info.dst != dst:
                    raise ConvdiffError(
                        f"--{info.enabled_by.replace('_', '-')} quantizes a {info.dst} model; the "
                        f"target here is {dst}",
                        f"pass --dst {info.dst}",
                    )
                found.append(info)
    return found


def _with_versions(
    chain: list[ConverterInfo], tool_versions: tuple[str, ...]
) -> list[ConverterInfo]:
    """Hops whose tool has a requested release run in that release's environment."""
    from convdiff.core.envs import parse_requirement

    wanted = dict(parse_requirement(spec) for spec in tool_versions)
    tools = {i.name for i in chain}
    unused = [t for t in wanted if t not in tools]
    if unused:
        raise ConvdiffError(
            f"--tool-version names {unused[0]}, which no hop of this run uses "
            f"(tools: {', '.join(i.name for i in chain)})",
            "name a tool of the route, or pick the route with --converter",
        )
    planned = []
    for info in chain:
        if info.name in wanted:
            info = replace(info, env=f"{info.name}=={wanted[info.name]}")
        elif info.env and "==" not in info.env:  # a tool that always runs in its own env
            info = replace(info, env="==".join(parse_requirement(info.env)))
        planned.append(info)
    return planned


def _through(edges: dict[tuple[str, str], ConverterInfo], stops: list[str]) -> list[ConverterInfo]:
    chain: list[ConverterInfo] = []
    for start, goal in zip(stops, stops[1:], strict=False):
        if start == goal:
            continue
        leg = _shortest(edges, start, goal)
        if leg is not None and any(info.env for info in leg):
            # An equally short route in convdiff's own environment needs no environment built
            # (minutes, gigabytes): onnx -> tflite stays onnx2keras + TFLiteConverter rather
            # than onnx2torch + litert-torch, which only torch -> tflite shortens.
            own = _shortest({k: v for k, v in edges.items() if not v.env}, start, goal)
            if own is not None and len(own) == len(leg):
                leg = own
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


__all__ = [
    "CONVERTERS",
    "FRAMEWORKS",
    "ConverterInfo",
    "converter",
    "converter_names",
    "edge",
    "find_chain",
    "load_all",
]
