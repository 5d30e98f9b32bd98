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


class OutputDirError(ConvdiffError):
    """The output folder cannot be written."""


class TaskFailed(Exception):
    """A task raised inside a worker; carries the worker-side error as data.

    Raised by tasks' callers in the orchestrator only when they choose to; normally a
    failed task is turned into a Crash record.
    """

    def __init__(self, kind: str, message: str, traceback: str = "") -> None:
        self.kind = kind
        self.message = message
        self.traceback = traceback
        super().__init__(f"{kind}: {message}")
