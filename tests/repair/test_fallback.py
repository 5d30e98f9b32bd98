"""The float-fallback search (:mod:`convdiff.repair.fallback`), on a format double.

The search is pure logic over three callables, so a double stands in for a format module here
(the real ONNX and TFLite modules are tested with real models in their own files): a "model"
file records which layers run in float, and its outputs are as wrong as the layers it still
quantizes make them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from convdiff.repair.fallback import Candidate, FallbackContext, search
from convdiff.repair.verify import agreement

IMAGES = 8
CLASSES = 5


def _format(errors: dict[str, float], contributions: dict[str, float]) -> SimpleNamespace:
    """A format whose layer ``l`` adds ``errors[l]`` to the logits while it is quantized."""

    def write(ctx: FallbackContext, layers: list[str], out: Path) -> Path:
        # a float layer makes the file 10 bytes bigger, as float weights do
        out.write_text(
            json.dumps(sorted(layers), separators=(",", ":")) + " " * (100 + 10 * len(layers))
        )
        return out

    return SimpleNamespace(
        quantized_layers=lambda ctx: len(errors),
        candidates=lambda ctx: [
            Candidate(name, contributions[name], "double") for name in contributions
        ],
        write=write,
        errors=errors,
    )


def _logits() -> np.ndarray:
    y = np.zeros((IMAGES, CLASSES), dtype=np.float32)
    y[np.arange(IMAGES), np.arange(IMAGES) % CLASSES] = 1.0
    return y


def _runner(fmt: SimpleNamespace) -> tuple[list[list[str]], object]:
    seen: list[list[str]] = []

    def run(path: Path) -> np.ndarray:
        floats = json.loads(path.read_text().strip())
        seen.append(floats)
        return _outputs(sum(e for name, e in fmt.errors.items() if name not in floats))

    return seen, run


def _outputs(wrong: float) -> np.ndarray:
    """Logits off by ``wrong``: each whole unit of it moves the label of one more image."""
    y = _logits()
    flipped = min(IMAGES, int(wrong))
    y[np.arange(flipped), (np.arange(flipped) + 1) % CLASSES] += 1.5
    return y + wrong * 1e-3


def _context(tmp_path: Path) -> FallbackContext:
    target = tmp_path / "target.bin"
    target.write_text(" " * 100)
    return FallbackContext(
        source=tmp_path / "src",
        source_framework="keras",
        target=target,
        images=tmp_path / "x.npz",
        pool=None,
        work=tmp_path / "work",  # type: ignore[arg-type]
    )


def _measure(y: np.ndarray):
    return agreement(_logits(), y, [f"i{n}" for n in range(IMAGES)])


def test_the_fewest_top_ranked_layers_that_reach_zero(tmp_path: Path) -> None:
    # 9 layers; the three that matter are ranked first, the search needs exactly those 3
    errors = {f"l{i}": 0.0 for i in range(9)} | {"l0": 2.5, "l1": 1.5, "l2": 1.2}
    contributions = {name: 9.0 - i for i, name in enumerate(errors)}
    fmt = _format(errors, contributions)
    _, run = _runner(fmt)
    ctx = _context(tmp_path)
    before = _measure(_quantized(fmt))
    result = search(ctx, fmt, before, run, _measure)
    assert result.layers == ["l0", "l1", "l2"]
    assert result.after.top1_discrepancy == 0.0
    assert before.top1_discrepancy == 62.5  # 5 of 8 labels moved by an error of 5.2
    # k = 1, 2, 4 (reaches 0), then 3 between 2 and 4
    assert [t.layers for t in result.trials] == [1, 2, 4, 3]
    assert result.passes == 4
    assert result.size_before == 100
    assert result.size_after == len('["l0","l1","l2"]') + 130
    assert Path(result.final_file).name == "fallback-3.bin"


def _quantized(fmt: SimpleNamespace) -> np.ndarray:
    return _outputs(sum(fmt.errors.values()))


def test_best_reached_is_kept_when_zero_is_out_of_reach(tmp_path: Path) -> None:
    # a layer that is not a candidate (say, an op the format cannot run in float) keeps 1 label off
    errors = {"a": 3.0, "b": 0.5, "stuck": 1.0}
    fmt = _format(errors, {"a": 2.0, "b": 1.0})
    _, run = _runner(fmt)
    before = _measure(_quantized(fmt))
    result = search(_context(tmp_path), fmt, before, run, _measure)
    assert result.after.top1_discrepancy == 12.5  # 1 of 8 still off
    assert result.layers == ["a", "b"]  # k=2 is better in max |diff| than k=1 at equal top-1
    assert [t.layers for t in result.trials] == [1, 2]


def test_nothing_is_kept_when_no_set_is_better(tmp_path: Path) -> None:
    errors = {"a": 0.0, "stuck": 2.0}
    fmt = _format(errors, {"a": 1.0})
    _, run = _runner(fmt)
    before = _measure(_quantized(fmt))
    result = search(_context(tmp_path), fmt, before, run, _measure)
    assert result.layers == [] and result.final_file == ""
    assert result.after == before and result.size_after == result.size_before


@pytest.mark.parametrize("errors", [{"a": 0.2}, {}])
def test_a_target_that_agrees_or_has_nothing_quantized_is_left_alone(
    tmp_path: Path, errors: dict[str, float]
) -> None:
    fmt = _format(errors, dict.fromkeys(errors, 1.0))
    _, run = _runner(fmt)
    result = search(_context(tmp_path), fmt, _measure(_quantized(fmt)), run, _measure)
    assert result.trials == [] and result.layers == []
