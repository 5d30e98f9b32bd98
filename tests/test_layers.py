"""The package's layers, checked on every test run: no import cycle, no import of a higher layer.

Imports inside functions count (a deferred import that only hides a cycle is still a cycle);
imports under ``if TYPE_CHECKING:`` do not. Why a test and not a convention: the command layer
had grown two cycles of eight and two modules, each held together by deferred imports, and
renderers that imported orchestrators; a rule a machine checks does not erode.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "convdiff"

# Lowest first. A module may import modules of its own layer or of a lower one. A layer entry
# names modules or packages (a package stands for everything below it).
LAYERS: list[tuple[str, ...]] = [
    ("convdiff",),  # the root package: __version__ only
    ("convdiff.core",),  # errors, options, records, json, text, progress, cache, outdir
    (
        "convdiff.metrics",
        "convdiff.hints",
        "convdiff.frameworks",
        "convdiff.inputs.data",
        "convdiff.inputs.imagenet",
        "convdiff.inputs.preprocess",
        "convdiff.inputs.sampling",
        "convdiff.inputs.scan",
        "convdiff.inputs.stream",
    ),
    ("convdiff.converters", "convdiff.zoo", "convdiff.ir"),
    ("convdiff.inputs.source", "convdiff.inputs.spec", "convdiff.stages"),
    ("convdiff.runtime",),  # worker pool, child, child-side tasks, the typed client
    ("convdiff.repair",),  # patch, plan, verify, appliers
    ("convdiff.commands.run",),
    ("convdiff.commands.localize",),
    ("convdiff.commands.repair",),
    ("convdiff.commands.followup",),
    ("convdiff.commands.table", "convdiff.commands.check"),
    ("convdiff.cli", "convdiff.api", "convdiff.__main__"),
    # the old homes of the public API: deprecated re-exports of the layers above
    (
        "convdiff.compat",
        "convdiff.run",
        "convdiff.config",
        "convdiff.report",
        "convdiff.localize",
        "convdiff.table",
        "convdiff.check",
        "convdiff.check_config",
        "convdiff.repair.command",
    ),
]
# siblings that must not know each other although they share a layer
INDEPENDENT = [("convdiff.commands.table", "convdiff.commands.check")]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """The convdiff modules ``name`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for stmt in branch.body
        for node in ast.walk(stmt)
    }
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import mod`` is an import of mod; ``from mod import name``, of mod
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer_of(module: str) -> tuple[int, str]:
    """The layer index and the entry of the longest entry that holds ``module``."""
    best = (-1, "")
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            inside = module == entry or module.startswith(entry + ".")
            if inside and len(entry) > len(best[1]):
                best = (index, entry)
    return best


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m)[0] < 0] == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} (layer {layer_of(module)[0]}) imports {target} (layer {layer_of(target)[0]})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if layer_of(target)[0] > layer_of(module)[0]
    ]
    assert upward == []


@pytest.mark.parametrize(("a", "b"), INDEPENDENT)
def test_independent_siblings(a: str, b: str) -> None:
    crossing = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        for x, y in ((a, b), (b, a))
        if layer_of(module)[1] == x and layer_of(target)[1] == y
    ]
    assert crossing == []


def test_renderers_import_only_their_own_command() -> None:
    """commands/<x>/render.py reads its own command's types, never an orchestrator or another
    command, never a worker."""
    bad = []
    for module, targets in GRAPH.items():
        parts = module.split(".")
        if parts[:2] != ["convdiff", "commands"] or parts[-1] != "render":
            continue
        own = ".".join(parts[:3])
        for target in targets:
            other_command = target.startswith("convdiff.commands.") and not target.startswith(own)
            if other_command or target.endswith(".flow") or target.startswith("convdiff.runtime"):
                bad.append(f"{module} imports {target}")
    assert bad == []


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_checker_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    """The rule counts deferred imports: a cycle hidden in a function body is still found."""
    file = tmp_path / "mod.py"
    file.write_text(
        "def f():\n    from convdiff.commands.run import flow\n"
        "if TYPE_CHECKING:\n    from convdiff.cli import cli\n"
    )
    assert imports_of("convdiff.stages.fake", file) == {"convdiff.commands.run.flow"}
