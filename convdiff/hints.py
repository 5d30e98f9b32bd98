"""What to do about a converter crash convdiff has seen before.

A crash message names the failing op; a person then needs the known cause and the way around
it. Each hint matches the tool and its message; hints are data, so adding one is one entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from convdiff.core.records import Crash


@dataclass(frozen=True)
class Hint:
    tool: str
    pattern: str  # regular expression searched in the crash message
    advice: str


HINTS: tuple[Hint, ...] = (
    Hint(
        "onnx2torch",
        r"Converter is not implemented .*version=(1[89]|2\d)\)",
        "the ONNX file uses an opset-18+ version of this op, which onnx2torch 1.5 cannot read; "
        "for a torch source, export with --torch-exporter torchscript --opset 17",
    ),
    Hint(
        "TFLiteConverter",
        r"'tf\.Mean' op is neither a custom op nor a flex op.*xi64>",
        "the Keras model reduces over int64 axes (onnx2keras keeps ONNX's int64 axes) and "
        "TFLite's MEAN takes int32 axes only; litert-torch avoids the route (the default for a "
        "torch source; from ONNX, --converter litert-torch goes through onnx2torch)",
    ),
    Hint(
        "onnx2keras",
        r"weight shape \(1, \d+\) is not compatible with provided weight shape",
        "onnx2keras misreads the MatMul weights of tf2onnx graphs; it converts ONNX exported "
        "from torch (NCHW) instead",
    ),
)


def hint_for(crash: Crash) -> str | None:
    """The advice for a crash, or None when convdiff knows nothing more than the message."""
    for hint in HINTS:
        if hint.tool == crash.tool and re.search(hint.pattern, crash.message):
            return hint.advice
    return None
