"""Deprecated: the old home of this API; use ``from convdiff.api import RunReport``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.run.types import Artifact, Crash, Hop, Phase, RunReport

__all__ = ["Artifact", "Crash", "Hop", "Phase", "RunReport"]

warnings.warn(
    "convdiff.report is deprecated; use `from convdiff.api import RunReport`",
    DeprecationWarning,
    stacklevel=2,
)
