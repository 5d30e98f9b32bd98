"""Deprecated: the old home of this API; use ``from convdiff.api import LocalizeConfig, localize``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.localize.flow import localize
from convdiff.commands.localize.render import summary
from convdiff.commands.localize.types import LocalizeConfig, LocalizeReport

__all__ = ["LocalizeConfig", "LocalizeReport", "localize", "summary"]

warnings.warn(
    "convdiff.localize is deprecated; use `from convdiff.api import LocalizeConfig, localize`",
    DeprecationWarning,
    stacklevel=2,
)
