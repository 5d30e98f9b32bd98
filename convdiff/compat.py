"""The old homes of the public API (convdiff 0.1's flat layout), kept working with a warning.

Each old module is three lines that call :func:`reexport`, which gives it the names it used to
define, taken from their new homes, and warns once, at the importer's line, with the import to
use now. The table below is the whole map from old to new.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

# old module -> (the import to use now, {name: the module that holds it now})
OLD_HOMES: dict[str, tuple[str, dict[str, str]]] = {
    "convdiff.run": (
        "from convdiff.api import run",
        {
            "run": "convdiff.commands.followup",
            "RunConfig": "convdiff.commands.run.types",
            "RunReport": "convdiff.commands.run.types",
        },
    ),
    "convdiff.config": (
        "from convdiff.api import ConvertOptions, RunConfig",
        {
            "RunConfig": "convdiff.commands.run.types",
            "ConvertOptions": "convdiff.core.options",
            "TFLITE_OPTS": "convdiff.core.options",
            "TORCH_EXPORTERS": "convdiff.core.options",
        },
    ),
    "convdiff.report": (
        "from convdiff.api import RunReport",
        {
            "Artifact": "convdiff.commands.run.types",
            "Crash": "convdiff.commands.run.types",
            "Hop": "convdiff.commands.run.types",
            "Phase": "convdiff.commands.run.types",
            "RunReport": "convdiff.commands.run.types",
        },
    ),
    "convdiff.localize": (
        "from convdiff.api import LocalizeConfig, localize",
        {
            "localize": "convdiff.commands.localize.flow",
            "summary": "convdiff.commands.localize.render",
            "LocalizeConfig": "convdiff.commands.localize.types",
            "LocalizeReport": "convdiff.commands.localize.types",
        },
    ),
    "convdiff.table": (
        "from convdiff.api import TableConfig, table",
        {
            "table": "convdiff.commands.table.flow",
            "TableConfig": "convdiff.commands.table.types",
            "TableReport": "convdiff.commands.table.types",
        },
    ),
    "convdiff.check": (
        "from convdiff.api import run_check",
        {
            "run_check": "convdiff.commands.check.flow",
            "CheckResult": "convdiff.commands.check.types",
            "EntryResult": "convdiff.commands.check.types",
        },
    ),
    "convdiff.check_config": (
        "from convdiff.api import load_check_config",
        {
            "CheckConfig": "convdiff.commands.check.config",
            "CheckEntry": "convdiff.commands.check.config",
            "load_check_config": "convdiff.commands.check.config",
        },
    ),
    "convdiff.repair.command": (
        "from convdiff.api import RepairConfig, repair",
        {
            "repair": "convdiff.commands.repair.flow",
            "summary": "convdiff.commands.repair.render",
            "RepairConfig": "convdiff.commands.repair.types",
            "RepairReport": "convdiff.commands.repair.types",
        },
    ),
}


def reexport(old: str) -> dict[str, Any]:
    """``{name: object}`` of the old module ``old``; warns that it is deprecated."""
    new, names = OLD_HOMES[old]
    warnings.warn(f"{old} is deprecated; use `{new}`", DeprecationWarning, stacklevel=3)
    return {name: getattr(importlib.import_module(home), name) for name, home in names.items()}


__all__ = ["OLD_HOMES", "reexport"]
