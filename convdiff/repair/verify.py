"""The verify loop: apply a patch's edits stage by stage and keep what the differential confirms.

Why a loop and not one application: a finding is a hypothesis. Edits are applied in stage
order (weights, hyperparams, graph), one group at a time, to a new file; the patched target
runs on exactly the source's tensors (one inference pass over the image set in its own
runtime) and is compared with the source's outputs. A group is kept only if agreement does not
get worse (top-1 discrepancy first, then the largest output difference); a group that worsens
it is tried edit by edit, so one wrong edit cannot sink the right ones. An edit that changes
nothing on these images is kept too: the localizer saw the fault in the file, and other inputs
may show it. The loop stops once its edits made the target match the source at float level
(no top-1 label differs, no output by more than :data:`FLOAT_LEVEL` of the output scale) or
the groups run out. The verdict is looser: the target *agrees* when no top-1 label differs
and no output differs by more than :data:`convdiff.stages.tools.RTOL` of the output scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.metrics import abs_max, compare
from convdiff.repair.appliers.apply import apply_edits
from convdiff.repair.patch import Edit
from convdiff.runtime.pool import WorkerPool
from convdiff.stages.tools import RTOL

GROUPS = ("weights", "hyperparams", "graph")
FLOAT_LEVEL = 1e-5  # what float32 conversions of the same weights differ by, relative


@dataclass(frozen=True)
class Agreement:
    """How far the target's outputs are from the source's on the image set."""

    top1_discrepancy: float
    max_abs_diff: float
    agrees: bool  # within the verdict's tolerance (RTOL)
    exact: bool  # at float level (FLOAT_LEVEL): nothing left to repair

    def not_worse_than(self, other: Agreement) -> bool:
        if self.top1_discrepancy != other.top1_discrepancy:
            return self.top1_discrepancy < other.top1_discrepancy
        return self.max_abs_diff <= other.max_abs_diff * (1 + 1e-6)


@dataclass
class Step:
    """One application of edits and what the differential said."""

    stage: str
    edits: list[str]  # "<layer>.<field>" of each edit tried
    top1_discrepancy: float
    max_abs_diff: float
    kept: bool
    file: str


@dataclass
class VerifyResult:
    before: Agreement
    after: Agreement
    kept: list[Edit] = field(default_factory=list)
    dropped: list[Edit] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    passes: int = 0  # inference passes of the target over the whole image set
    final_file: str = ""  # the file of the last kept step ("" when nothing was kept)


def agreement(y_src: np.ndarray, y_dst: np.ndarray, names: list[str]) -> Agreement:
    m = compare(y_src, y_dst, names, [None] * len(names))
    scale = abs_max(y_src)
    same = m.top1_discrepancy == 0
    scale = max(scale, 1e-12)
    return Agreement(
        m.top1_discrepancy,
        m.max_abs_diff,
        same and m.max_abs_diff <= RTOL * scale,
        same and m.max_abs_diff <= FLOAT_LEVEL * scale,
    )


def verify(
    fmt: str,
    target: Path,
    edits: list[Edit],
    tensors: dict[str, np.ndarray],
    before: Agreement,
    run_target: Callable[[Path], np.ndarray],
    measure: Callable[[np.ndarray], Agreement],
    work: Path,
    pool: WorkerPool | None = None,
) -> VerifyResult:
    """Apply ``edits`` (model edits only) group by group; see the module docstring.

    ``run_target(path)`` runs a model file on the source's tensors and returns its outputs;
    ``measure(y)`` compares them with the source's. ``pool`` runs the Keras and torch
    appliers (:func:`apply_edits`).
    """
    result = VerifyResult(before, before)
    work.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix
    for stage in GROUPS:
        group = [e for e in edits if e.stage == stage]
        if not group:
            continue
        if result.after.exact and not result.before.exact:
            result.dropped += group  # not needed: the kept edits made the target match
            continue
        trials = [group] if len(group) == 1 else [group, *([e] for e in group)]
        for trial in trials:
            if trial is not group and all(e in result.kept for e in group):
                break  # the whole group was kept: no need to try its edits alone
            candidate = result.kept + trial
            path = work / f"step-{len(result.steps) + 1}-{stage}{suffix}"
            applied = apply_edits(fmt, target, candidate, tensors, path, pool)
            now = measure(run_target(path))
            result.passes += 1
            # kept only if the applier wrote one of this trial's own edits
            wrote = any(e in applied.applied for e in trial)
            keep = wrote and now.not_worse_than(result.after)
            result.steps.append(
                Step(
                    stage,
                    [f"{e.layer}.{e.field}" if e.field else e.layer for e in trial],
                    now.top1_discrepancy,
                    now.max_abs_diff,
                    keep,
                    str(path),
                )
            )
            if keep:
                result.kept, result.after, result.final_file = candidate, now, str(path)
        result.dropped += [e for e in group if e not in result.kept]
    return result


def to_json(result: VerifyResult) -> dict[str, Any]:
    return {
        "before": result.before.__dict__,
        "after": result.after.__dict__,
        "passes": result.passes,
        "steps": [s.__dict__ for s in result.steps],
        "kept": [e.to_json() for e in result.kept],
        "dropped": [e.to_json() for e in result.dropped],
    }


__all__ = ["GROUPS", "Agreement", "Step", "VerifyResult", "agreement", "to_json", "verify"]
