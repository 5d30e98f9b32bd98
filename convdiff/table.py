"""Deprecated: convdiff 0.1's home of this API; :data:`convdiff.compat.OLD_HOMES` says the new."""

from convdiff.compat import reexport

globals().update(reexport(__name__))
