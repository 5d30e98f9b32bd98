"""A seeded, stratified random subset of a data set (``--sample N --seed S``).

Why stratified: a 500-image sample of ImageNet's 50,000 validation images should hold every
class about equally, as the whole set does, not whatever a plain draw happens to favour; a
discrepancy measured on it then speaks for the whole set. Each class (each distinct label,
unlabelled images forming one group of their own) gets its share of N by largest remainders;
ties between equal remainders (500 of 1000 classes of 50 images each get one image) are
broken at random, so no class is favoured by its index. Deterministic for a seed: numpy's
``Generator(PCG64(seed))``, whose streams numpy keeps stable across releases.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def shares(sizes: Sequence[int], n: int, rng: np.random.Generator) -> list[int]:
    """How many of each group's ``sizes`` a sample of ``n`` takes: proportional, the largest
    remainders rounded up (ties in random order), never more than a group holds."""
    total = sum(sizes)
    if n >= total:
        return list(sizes)
    exact = np.array(sizes, dtype=np.float64) * n / total
    taken = np.floor(exact).astype(np.int64)
    left = n - int(taken.sum())
    # largest remainder first; equal remainders in the order of a random key
    order = np.lexsort((rng.random(len(sizes)), -(exact - taken)))
    taken[order[:left]] += 1
    return [int(t) for t in taken]


def sample_indices(groups: Sequence[Hashable], n: int, seed: int) -> list[int]:
    """The positions (sorted) of a stratified random sample of ``n`` items, item i being in
    group ``groups[i]`` (e.g. its class label; None for unlabelled). All items when ``n`` is
    not less than their count. One group: a plain seeded random sample."""
    if n >= len(groups):
        return list(range(len(groups)))
    rng = np.random.default_rng(seed)
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    pools = list(members.values())  # first-seen order: the items' order, not the group keys'
    picked: list[int] = []
    for pool, count in zip(pools, shares([len(p) for p in pools], n, rng), strict=True):
        chosen = rng.choice(len(pool), size=count, replace=False)
        picked.extend(pool[i] for i in chosen)
    return sorted(picked)
