"""Deprecated: the old home of this API; use ``from convdiff.api import run_check``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.check.flow import run_check
from convdiff.commands.check.types import CheckResult, EntryResult

__all__ = ["CheckResult", "EntryResult", "run_check"]

warnings.warn(
    "convdiff.check is deprecated; use `from convdiff.api import run_check`",
    DeprecationWarning,
    stacklevel=2,
)
