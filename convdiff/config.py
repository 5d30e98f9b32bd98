"""Deprecated: the old home of this API; use ``from convdiff.api import ConvertOptions, RunConfig``.

Kept so that code written against convdiff 0.1's layout still runs (with a warning).
"""

import warnings

from convdiff.commands.run.types import RunConfig
from convdiff.core.options import TFLITE_OPTS, TORCH_EXPORTERS, ConvertOptions

__all__ = ["TFLITE_OPTS", "TORCH_EXPORTERS", "ConvertOptions", "RunConfig"]

warnings.warn(
    "convdiff.config is deprecated; use `from convdiff.api import ConvertOptions, RunConfig`",
    DeprecationWarning,
    stacklevel=2,
)
