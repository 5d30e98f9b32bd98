"""Deprecated: the old home of this API; use ``from convdiff.api import TableConfig, table``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.table.flow import table
from convdiff.commands.table.types import TableConfig, TableReport

__all__ = ["TableConfig", "TableReport", "table"]

warnings.warn(
    "convdiff.table is deprecated; use `from convdiff.api import TableConfig, table`",
    DeprecationWarning,
    stacklevel=2,
)
