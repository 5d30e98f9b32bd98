"""Deprecated: the old home of this API; use ``from convdiff.api import RepairConfig, repair``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.repair.flow import repair
from convdiff.commands.repair.render import summary
from convdiff.commands.repair.types import RepairConfig, RepairReport

__all__ = ["RepairConfig", "RepairReport", "repair", "summary"]

warnings.warn(
    "convdiff.repair.command is deprecated; use `from convdiff.api import RepairConfig, repair`",
    DeprecationWarning,
    stacklevel=2,
)
