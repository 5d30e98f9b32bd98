"""Deprecated: the old home of this API; use ``from convdiff.api import run``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.followup import run
from convdiff.commands.run.types import RunConfig, RunReport

__all__ = ["RunConfig", "RunReport", "run"]

warnings.warn(
    "convdiff.run is deprecated; use `from convdiff.api import run`",
    DeprecationWarning,
    stacklevel=2,
)
