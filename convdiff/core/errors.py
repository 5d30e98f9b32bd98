"""User-facing errors.

A :class:`ConvdiffError` is a problem with the user's input or environment: the CLI prints its
message as one line and exits with its code, without a traceback. Converter and runtime failures
are *not* errors: they are recorded as :class:`convdiff.commands.run.types.Crash` findings.
"""

from __future__ import annotations


class ConvdiffError(Exception):
    """Bad usage or input: one line naming the problem and the fix; exit code 2."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class UnknownModelError(ConvdiffError):
    """The model name is neither a zoo entry nor an existing file."""


class UnsupportedPairError(ConvdiffError):
    """No converter chain connects the two frameworks."""


class DataError(ConvdiffError):
    """The image folder is missing, empty or holds no readable image."""


class InputShapeError(ConvdiffError):
    """The model's input shape does not fit the preprocessing."""


class UnsafeModelError(ConvdiffError):
    """A model file that would run code when it loads, and nobody said to trust it
    (:mod:`convdiff.core.trust`)."""


class OutputDirError(ConvdiffError):
    """The output folder cannot be written."""


def is_user_error(type_name: str) -> bool:
    """Is ``type_name`` (a worker's exception, reported by name) a :class:`ConvdiffError`? A
    task that raises one (weights not on this machine, say) failed on the user's input."""
    pending, names = [ConvdiffError], set()
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return type_name in names
