"""One edit at a time into a model held in memory: the loop the ONNX and TFLite appliers share.

An applier gives one handler per action it can write; an edit whose action has no handler, or
whose handler raises :class:`SkipEdit`, is refused with the reason, and the others still go in
(the verify loop reports refused edits and keeps going).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from convdiff.repair.patch import Edit


class SkipEdit(Exception):
    """An edit this file cannot take; the message is the reason the patch report gives."""


def apply_each(
    edits: list[Edit], handlers: Mapping[str, Callable[[Edit], None]], applier: str
) -> tuple[list[Edit], list[tuple[Edit, str]]]:
    """Run each edit's handler; the edits applied, and those refused with their reasons."""
    applied: list[Edit] = []
    refused: list[tuple[Edit, str]] = []
    for edit in edits:
        try:
            handler = handlers.get(edit.action)
            if handler is None:
                raise SkipEdit(f"the {applier} applier does not do {edit.action!r}")
            handler(edit)
        except SkipEdit as skip:
            refused.append((edit, str(skip)))
        else:
            applied.append(edit)
    return applied, refused


def patch_tensor(edit: Edit, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """The tensor a ``set_tensor`` edit names, from the patch's npz."""
    if edit.value not in tensors:
        raise SkipEdit(f"the patch holds no tensor {edit.value!r}")
    return np.asarray(tensors[edit.value])
