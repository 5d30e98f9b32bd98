"""What an executor runs: a job (an item, its group, its memory estimate), and the estimates.

Shared by the executors (the local thread scheduler of `convdiff table`, the Ray executor of
:mod:`convdiff.runtime.ray_jobs`) and the commands that hand them work (table and check), which
must not know each other; hence here, below all of them, and free of any framework.

A job's peak memory is dominated by the biggest converter of its chain (tf2onnx on ResNet101
takes 13.4 GB). Jobs of one *group* (same model, same source) build the same source artifact
and share intermediate hops in the cache, so every executor runs them one after another: two
of them at once would race on one cache entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Peak memory (GB) of one cell, from DESIGN.md's measured facts, keyed by (model, tool);
# "*" matches any model or tool. A cell's estimate is the largest entry its chain hits.
MEMORY_GB: dict[tuple[str, str], float] = {
    ("resnet101", "tf2onnx"): 13.4,
    ("inceptionv3", "tf2onnx"): 7.6,
    ("mobilenetv2", "TFLiteConverter"): 3.0,  # the low end of the converter's 2.7-4 GB
    ("*", "TFLiteConverter"): 4.0,
    ("mobilenetv2", "*"): 3.0,
    ("resnet101", "*"): 4.0,
    ("inceptionv3", "*"): 4.0,
    ("efficientnet_lite0", "*"): 3.0,
}
ZOO_DEFAULT_GB = 3.0  # a zoo model the table does not know
FILE_DEFAULT_GB = 1.0  # a user's model file: runtimes and converters of a small graph


def estimate_gb(model: str, tools: Sequence[str], is_file: bool = False) -> float:
    """Estimated peak memory of a cell converting ``model`` with ``tools`` (its chain)."""
    if is_file:
        return FILE_DEFAULT_GB
    found = [MEMORY_GB.get((model, "*"), ZOO_DEFAULT_GB)]
    for tool in tools:
        found.append(MEMORY_GB.get((model, tool), MEMORY_GB.get(("*", tool), 0.0)))
    return max(found)


@dataclass(frozen=True)
class Job(Generic[T]):
    item: T
    group: str  # jobs of one group run one after another, in order
    estimate_gb: float


class Interrupted(Exception):
    """Raised by an executor after the user interrupted it and the running jobs ended."""

    def __init__(self, results: list) -> None:
        super().__init__("interrupted")
        self.results = results


__all__ = ["FILE_DEFAULT_GB", "MEMORY_GB", "ZOO_DEFAULT_GB", "Interrupted", "Job", "estimate_gb"]
