"""Repair: a patch of edits to the converted model (:mod:`convdiff.repair.patch`) and the appliers
that write a new model file in the target's own format (:mod:`convdiff.repair.appliers.apply`: ONNX
and TFLite by file editing here, Keras and torch in their frameworks' workers). No framework is
imported here."""

from convdiff.repair.appliers.apply import (
    ApplyResult,
    Skipped,
    apply_edits,
    apply_patch,
    read_tensor,
)
from convdiff.repair.patch import Edit, Patch, diff_view, sha256_of, tensor_summary

__all__ = [
    "ApplyResult",
    "Edit",
    "Patch",
    "Skipped",
    "apply_edits",
    "apply_patch",
    "diff_view",
    "read_tensor",
    "sha256_of",
    "tensor_summary",
]
