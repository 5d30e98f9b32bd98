"""Metrics against values computed by hand (see the comments for the arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

from convdiff.metrics import align_classes, compare, kendall_tau_union, top_k

SRC = np.array(
    [
        [0.6, 0.2, 0.1, 0.05, 0.03, 0.02],  # agrees
        [0.1, 0.7, 0.1, 0.05, 0.03, 0.02],  # top-1 1 -> 0
        [0.5, 0.2, 0.15, 0.1, 0.05, 0.0],  # same top-1, label 4 leaves the top-5 for 5
        [0.1, 0.1, 0.5, 0.1, 0.1, 0.1],  # agrees
    ]
)
DST = np.array(
    [
        [0.6, 0.2, 0.1, 0.05, 0.03, 0.02],
        [0.7, 0.1, 0.1, 0.05, 0.03, 0.02],
        [0.5, 0.2, 0.15, 0.1, 0.0, 0.05],
        [0.1, 0.1, 0.5, 0.1, 0.1, 0.1],
    ]
)
NAMES = ["a.png", "b.png", "c.png", "d.png"]


def test_pair_metrics_by_hand() -> None:
    m = compare(SRC, DST, NAMES, accepted=[(0,), (1,), (), (2,)])
    assert m.images == 4
    assert m.top1_discrepancy == 25.0
    assert m.top5_discrepancy == 25.0
    # tau-b per image: 1; (7 - 1) / sqrt(9 * 9) with one tie on each side; 14-1 of 15 pairs;
    # 4 untied pairs all concordant -> 1
    assert m.kendall_tau_top5 == pytest.approx((1 + 2 / 3 + 13 / 15 + 1) / 4)
    assert m.max_abs_diff == pytest.approx(0.6)
    assert m.mean_abs_diff == pytest.approx(1.3 / 24)
    assert m.labelled == 3
    assert m.src_accuracy == 100.0
    assert m.dst_accuracy == pytest.approx(200 / 3)
    assert [(d.image, d.src_label, d.dst_label) for d in m.disagreeing] == [("b.png", 1, 0)]
    assert not m  # a disagreement makes the pair falsy


def test_identical_outputs_agree_fully() -> None:
    m = compare(SRC, SRC, NAMES)
    assert bool(m)
    assert (m.top1_discrepancy, m.top5_discrepancy, m.kendall_tau_top5) == (0.0, 0.0, 1.0)
    assert (m.max_abs_diff, m.src_accuracy, m.labelled) == (0.0, None, 0)


def test_kendall_tau_reversed_order_is_minus_one() -> None:
    a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert kendall_tau_union(a, a[::-1].copy(), k=5) == -1.0


def test_top_k_breaks_ties_towards_lower_index() -> None:
    assert top_k(np.array([[0.1, 0.3, 0.3, 0.0]]), 3).tolist() == [[1, 2, 0]]


def test_1001_class_output_drops_background() -> None:
    src = np.zeros((1, 1001))
    src[0, 6] = 1.0  # class 5 after dropping background 0
    dst = np.zeros((1, 1000))
    dst[0, 5] = 1.0
    a, b, note = align_classes(src, dst)
    assert a.shape == b.shape == (1, 1000)
    assert note == "source has 1001 classes; its background class 0 was dropped"
    assert compare(src, dst, ["x"]).top1_discrepancy == 0.0


def test_different_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="outputs have 10 and 1000 classes"):
        align_classes(np.zeros((1, 10)), np.zeros((1, 1000)))
