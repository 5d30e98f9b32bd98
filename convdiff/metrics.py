"""Differential metrics between two models' outputs on the same images.

Label discrepancy is the study's headline number: the share of images whose top-1 label
differs between source and target. The rest say how close the disagreement is: top-5 sets,
the order inside them (Kendall tau), raw output distance, and accuracy where labels exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Disagreement:
    """One image whose top-1 label differs between source and target."""

    image: str
    src_label: int
    dst_label: int


@dataclass(frozen=True)
class PairMetrics:
    images: int
    top1_discrepancy: float  # percent of images whose top-1 labels differ
    top5_discrepancy: float  # percent of images whose top-5 label *sets* differ
    kendall_tau_top5: float  # mean over images, on the union of both top-5 lists
    max_abs_diff: float
    mean_abs_diff: float
    src_accuracy: float | None = None  # percent of labelled images, top-1
    dst_accuracy: float | None = None
    labelled: int = 0
    disagreeing: tuple[Disagreement, ...] = field(default_factory=tuple)
    class_note: str = ""  # e.g. how a 1001-class output was aligned to 1000

    def __bool__(self) -> bool:
        """True when the two models agree on every top-1 label."""
        return self.top1_discrepancy == 0.0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, best first; ties go to the lower index."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def kendall_tau_union(src_row: np.ndarray, dst_row: np.ndarray, k: int = 5) -> float:
    """Kendall tau-b of two models' rankings over the union of their top-k labels.

    Each model ranks the union by its own scores; 1.0 means the same order, -1.0 the reverse.
    Using the union (not only the shared labels) makes a label that drops out of the top-k
    count. tau-b, not tau-a, so that tied scores (common in saturated softmax outputs) do not
    make identical outputs look different.
    """
    labels = np.union1d(top_k(src_row[None], k)[0], top_k(dst_row[None], k)[0])
    a, b = src_row[labels], dst_row[labels]
    i, j = np.triu_indices(len(labels), k=1)
    sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    concordant, discordant = int(np.sum(sa * sb > 0)), int(np.sum(sa * sb < 0))
    denominator = np.sqrt(float(np.sum(sa != 0)) * float(np.sum(sb != 0)))
    return float((concordant - discordant) / denominator) if denominator else 1.0


def align_classes(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Make outputs with one extra leading class (a background class, TF-slim style: 1001 vs
    1000) comparable to the others by dropping it."""
    if src.shape[1] == dst.shape[1]:
        return src, dst, ""
    if abs(src.shape[1] - dst.shape[1]) == 1:
        more = max(src.shape[1], dst.shape[1])
        side = "source" if src.shape[1] == more else "target"
        src = src[:, 1:] if src.shape[1] == more else src
        dst = dst[:, 1:] if dst.shape[1] == more else dst
        return src, dst, f"{side} has {more} classes; its background class 0 was dropped"
    raise ValueError(f"outputs have {src.shape[1]} and {dst.shape[1]} classes: not the same task")


# One image of a pair, as a run keeps it (``outputs/<hop>-<framework>.npy``): both top-5 lists
# with their scores (-1 / 0 where a model has fewer than 5 classes) and the per-image measures.
# Fixed-size records, so a hop's file is written batch by batch in place and read back whole.
ROW_DTYPE = np.dtype(
    [
        ("src_top", "<i4", (5,)),
        ("dst_top", "<i4", (5,)),
        ("src_scores", "<f4", (5,)),
        ("dst_scores", "<f4", (5,)),
        ("tau", "<f8"),
        ("max_abs", "<f8"),
        ("mean_abs", "<f8"),
    ]
)


def pair_rows(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, str]:
    """The per-image records (:data:`ROW_DTYPE`) of outputs of shape (images, classes), and
    the class note of :func:`align_classes`.

    Why per image: every metric of :class:`PairMetrics` is a count or a mean over images, so a
    run can compare batch by batch, keep these few bytes per image instead of the outputs,
    and summarize at the end (:func:`summarize`) -- or after a restart, from the rows on disk.
    """
    n = len(src)
    src = np.asarray(src, dtype=np.float64).reshape(n, -1)
    dst = np.asarray(dst, dtype=np.float64).reshape(n, -1)
    src, dst, note = align_classes(src, dst)
    k = min(5, src.shape[1])
    rows = np.zeros(n, ROW_DTYPE)
    rows["src_top"] = rows["dst_top"] = -1
    src_top, dst_top = top_k(src, k), top_k(dst, k)
    rows["src_top"][:, :k], rows["dst_top"][:, :k] = src_top, dst_top
    rows["src_scores"][:, :k] = np.take_along_axis(src, src_top, axis=1)
    rows["dst_scores"][:, :k] = np.take_along_axis(dst, dst_top, axis=1)
    rows["tau"] = [kendall_tau_union(src[i], dst[i], k) for i in range(n)]
    diff = np.abs(src - dst)
    if diff.size:
        rows["max_abs"] = diff.max(axis=1)
        rows["mean_abs"] = diff.mean(axis=1)
    return rows, note


def summarize(
    rows: np.ndarray,
    names: Sequence[str],
    accepted: Sequence[Sequence[int]] | None = None,
    class_note: str = "",
) -> PairMetrics:
    """All pair metrics from the per-image records of :func:`pair_rows` (one per name)."""
    n = len(names)
    src_top1, dst_top1 = rows["src_top"][:, 0], rows["dst_top"][:, 0]
    top1_differs = src_top1 != dst_top1
    top5_differs = np.array(
        [
            set(a) - {-1} != set(b) - {-1}
            for a, b in zip(rows["src_top"], rows["dst_top"], strict=True)
        ],
        dtype=bool,
    )
    src_acc = dst_acc = None
    labelled = [i for i in range(n) if accepted and accepted[i]]
    if labelled:
        src_acc = _percent(sum(int(src_top1[i]) in accepted[i] for i in labelled), len(labelled))
        dst_acc = _percent(sum(int(dst_top1[i]) in accepted[i] for i in labelled), len(labelled))
    return PairMetrics(
        images=n,
        top1_discrepancy=_percent(int(top1_differs.sum()), n),
        top5_discrepancy=_percent(int(top5_differs.sum()), n),
        kendall_tau_top5=float(np.mean(rows["tau"])) if n else 1.0,
        max_abs_diff=float(rows["max_abs"].max()) if n else 0.0,
        mean_abs_diff=float(rows["mean_abs"].mean()) if n else 0.0,
        src_accuracy=src_acc,
        dst_accuracy=dst_acc,
        labelled=len(labelled),
        disagreeing=tuple(
            Disagreement(names[i], int(src_top1[i]), int(dst_top1[i]))
            for i in np.flatnonzero(top1_differs)
        ),
        class_note=class_note,
    )


COMPARE_CHUNK = 1024  # images compared at once: memory stays O(chunk) for any data set


def compare_rows(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, str]:
    """:func:`pair_rows` of outputs of shape (images, classes), read :data:`COMPARE_CHUNK`
    images at a time: ``src`` and ``dst`` may be files mapped into memory
    (``np.load(..., mmap_mode="r")``), whose rows then serve :func:`summarize` and any other
    per-image question (the largest gaps) without reading the outputs again."""
    n = len(src)
    src, dst = np.asarray(src).reshape(n, -1), np.asarray(dst).reshape(n, -1)
    parts, note = [], ""
    for start in range(0, n, COMPARE_CHUNK):
        rows, note = pair_rows(
            src[start : start + COMPARE_CHUNK], dst[start : start + COMPARE_CHUNK]
        )
        parts.append(rows)
    if not parts:
        align_classes(src, dst)  # outputs of other tasks are refused even without images
        return np.zeros(0, ROW_DTYPE), note
    return np.concatenate(parts), note


def compare(
    src: np.ndarray,
    dst: np.ndarray,
    names: Sequence[str],
    accepted: Sequence[Sequence[int]] | None = None,
) -> PairMetrics:
    """All pair metrics for outputs of shape (images, classes), one per name.

    ``accepted[i]`` lists the labels counted as correct for image i (empty = unlabelled).
    """
    n = len(names)
    rows, note = compare_rows(np.asarray(src).reshape(n, -1), np.asarray(dst).reshape(n, -1))
    return summarize(rows, names, accepted, note)


def abs_max(y: np.ndarray) -> float:
    """The largest |value| of outputs (a file mapped into memory is read a chunk at a time)."""
    y = np.asarray(y).reshape(len(y), -1)
    peaks = [float(np.abs(y[i : i + COMPARE_CHUNK]).max()) for i in range(0, len(y), COMPARE_CHUNK)]
    return max(peaks, default=0.0) if y.size else 0.0


def _percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0
