"""Deprecated: the old home of this API; use ``from convdiff.api import load_check_config``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.check.config import CheckConfig, CheckEntry, load_check_config

__all__ = ["CheckConfig", "CheckEntry", "load_check_config"]

warnings.warn(
    "convdiff.check_config is deprecated; use `from convdiff.api import load_check_config`",
    DeprecationWarning,
    stacklevel=2,
)
