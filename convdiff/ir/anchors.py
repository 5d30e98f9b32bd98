"""Anchors: the layers that own parameters, paired across two models by their weights.

A converter may rewrite every parameter-free op of a model (LayerNorm decomposed, GELU
approximated by erf, attention fused or unrolled, split written as strided slices, ReLU6 as a
clip), but it carries each weight tensor over, in another layout or precision at most. So the
layers that own one -- convolutions, dense layers and constant matmuls, norm scales and shifts,
embeddings and class tokens -- are the fixed points of a conversion. :func:`pair_anchors`
pairs them before anything else is aligned, by content first:

- same shape: the rows (output channels) point the same way, ``|cos| >= MATCH_COS`` on
  average. That survives a per-channel scale (a BatchNorm or hard-sigmoid folded on one side),
  int8 / float16 / bfloat16 rounding, and a sign flip, and it tells apart two layers of the
  same shape drawn from the same random initializer;
- another shape of the same size: the 2-D transpose, else the same values in another order
  (a layout the canonical graph does not normalize);

then by dataflow order for what content cannot decide: a weight the conversion zeroed,
transposed or scrambled, or a family of identical tensors (LayerNorm scales all 1 at
initialization). Mutually unique content matches form a backbone; every other anchor of A is
paired with an unpaired B anchor of the same size between the B counterparts of its paired
neighbours, nearest to where the backbone puts it, content matches first.

Pure numpy: no framework, no TVM.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from convdiff.ir.graph import CanonicalGraph, Layer

MATCH_COS = 0.98  # mean |cos| of the rows of two weights that are one tensor (int8: ~0.9999)
SAME_VALUES = 1e-5  # relative difference of the sorted values of one tensor in two layouts
MIN_SIZE = 8  # smaller constants (a clip bound, a scalar scale) anchor nothing
WEIGHTED = ("conv2d", "dense")


@dataclass(frozen=True)
class Anchor:
    """Layer ``a`` of graph A owns the parameter that layer ``b`` of graph B owns.

    ``how``: ``content`` (the weights match), ``order`` (same size, placed by dataflow
    order: the weights differ or cannot tell candidates apart)."""

    a: str
    b: str
    how: str


def anchor_layers(g: CanonicalGraph) -> list[Layer]:
    """The layers of ``g`` that own a parameter of at least :data:`MIN_SIZE` values, in
    topological order."""
    return [lay for lay in g.layers if key_param(lay) is not None]


def key_param(layer: Layer) -> np.ndarray | None:
    """The tensor a layer is known by: a conv's or dense layer's weight, else its parameters
    concatenated in name order (a norm's scale and shift, an embedding's table)."""
    if layer.op in WEIGHTED and "weight" in layer.params:
        return layer.params["weight"]
    params = [np.asarray(layer.params[k]).ravel() for k in sorted(layer.params)]
    values = np.concatenate(params) if params else np.zeros(0)
    return values if values.size >= MIN_SIZE else None


def pair_anchors(a: CanonicalGraph, b: CanonicalGraph) -> list[Anchor]:
    """Pair the anchor layers of ``a`` and ``b`` (see the module docstring), in A's order."""
    la, lb = anchor_layers(a), anchor_layers(b)
    keys_a = [_as_float(key_param(lay)) for lay in la]
    keys_b = [_as_float(key_param(lay)) for lay in lb]
    fits = [
        [j for j, kb in enumerate(keys_b) if _fits(la[i], lb[j], ka, kb)]
        for i, ka in enumerate(keys_a)
    ]
    same = [[j for j in fits[i] if same_tensor(keys_a[i], keys_b[j])] for i in range(len(la))]
    claimed: dict[int, list[int]] = {}
    for i, js in enumerate(same):
        for j in js:
            claimed.setdefault(j, []).append(i)
    paired: dict[int, tuple[int, str]] = {}
    for i, js in enumerate(same):
        if len(js) == 1 and claimed[js[0]] == [i]:
            paired[i] = (js[0], "content")
    used = {j for j, _ in paired.values()}
    for i in range(len(la)):
        if i in paired:
            continue
        free = [j for j in fits[i] if j not in used]
        if not free:
            continue
        low, high, expected = _bracket(paired, i, len(la), len(lb))
        inside = [j for j in free if low < j < high]
        content = set(same[i])
        ranked = sorted(free, key=lambda j: (j not in content, j not in inside, abs(j - expected)))
        best = ranked[0]
        if best in content or best in inside:
            paired[i] = (best, "content" if best in content else "order")
            used.add(best)
    return [Anchor(la[i].id, lb[j].id, how) for i, (j, how) in sorted(paired.items())]


def same_tensor(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``b`` holds the values of ``a``, up to layout, precision and per-row scale."""
    if a.shape == b.shape:
        return _row_cos(a, b) >= MATCH_COS
    if a.ndim == 2 and a.T.shape == b.shape:
        return _row_cos(a.T, b) >= MATCH_COS
    sa, sb = np.sort(a.ravel()), np.sort(b.ravel())
    scale = float(np.abs(sa).max(initial=0.0))
    return scale > 0 and float(np.abs(sa - sb).max()) <= SAME_VALUES * scale


def _row_cos(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |cosine| between corresponding rows (axis 0); a zero row counts as no match."""
    ra = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    rb = b.reshape(ra.shape)
    norms = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
    dots = np.abs(np.sum(ra * rb, axis=1))
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return float(cos.mean())


def _fits(la: Layer, lb: Layer, ka: np.ndarray, kb: np.ndarray) -> bool:
    """Could ``lb`` hold ``la``'s parameter? Same size, and both weighted or both not."""
    return ka.size == kb.size and (la.op in WEIGHTED) == (lb.op in WEIGHTED)


def _bracket(
    paired: dict[int, tuple[int, str]], i: int, n_a: int, n_b: int
) -> tuple[int, int, float]:
    """The B indices of the paired anchors before and after A's anchor ``i`` (exclusive
    bounds; -1 and ``n_b`` at the ends), and where between them ``i`` is expected."""
    done = sorted(paired)
    k = bisect.bisect_left(done, i)
    ia, ja = (done[k - 1], paired[done[k - 1]][0]) if k > 0 else (-1, -1)
    ib, jb = (done[k], paired[done[k]][0]) if k < len(done) else (n_a, n_b)
    expected = ja + (i - ia) * (jb - ja) / max(ib - ia, 1)
    low, high = (ja, jb) if ja < jb else (-1, n_b)  # branches reordered: no bracket
    return low, high, expected


def _as_float(values: np.ndarray | None) -> np.ndarray:
    assert values is not None  # anchor_layers keeps layers that have one
    return np.asarray(values, dtype=np.float64)
