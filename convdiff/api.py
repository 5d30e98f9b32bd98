"""convdiff from Python: every command as a function of a config dataclass, returning a typed
report (``to_json``/``from_json``). The CLI is a thin layer over exactly these calls.

    from convdiff.api import ConvertOptions, RunConfig, run
    report = run(RunConfig(model="inceptionv3", src="tf", dst="tflite",
                           convert=ConvertOptions(tflite_opt="dynamic-range")))
"""

from __future__ import annotations

from convdiff.commands.check.config import CheckConfig, load_check_config
from convdiff.commands.check.flow import run_check
from convdiff.commands.check.types import CheckResult, EntryResult
from convdiff.commands.followup import run
from convdiff.commands.localize.flow import localize
from convdiff.commands.localize.types import LocalizeConfig, LocalizeReport
from convdiff.commands.repair.flow import repair
from convdiff.commands.repair.types import RepairConfig, RepairReport
from convdiff.commands.run.types import RunConfig, RunReport
from convdiff.commands.table.flow import table
from convdiff.commands.table.types import TableConfig, TableReport
from convdiff.core.options import ConvertOptions, ImageOptions, PreprocessOptions
from convdiff.core.progress import Progress

__all__ = [
    "CheckConfig",
    "CheckResult",
    "ConvertOptions",
    "EntryResult",
    "ImageOptions",
    "LocalizeConfig",
    "LocalizeReport",
    "PreprocessOptions",
    "Progress",
    "RepairConfig",
    "RepairReport",
    "RunConfig",
    "RunReport",
    "TableConfig",
    "TableReport",
    "load_check_config",
    "localize",
    "repair",
    "run",
    "run_check",
    "table",
]
