"""The inference pass's bookkeeping: what it resumes, what it starts afresh, and that the batch
size changes nothing in the results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from convdiff.commands.run.flow import run
from convdiff.commands.run.streaming import STATE_FILE, _resume_state, _State
from convdiff.commands.run.types import RunConfig
from convdiff.core.outdir import MARKER


def test_a_pass_resumes_only_its_own_key_and_batch(tmp_path: Path) -> None:
    folder = tmp_path / "outputs"
    fresh = _resume_state(folder, "k1", 4, 10)
    assert (fresh.batches_done, (folder / MARKER).exists()) == (0, True)
    (folder / "1-onnx.npy").write_bytes(b"rows of an earlier pass")
    replace(fresh, batches_done=2).write(folder / STATE_FILE)
    assert _resume_state(folder, "k1", 4, 10).batches_done == 2
    assert (folder / "1-onnx.npy").exists()
    # another run (other models or images) or another batch size: start again, files gone
    for key, batch in (("k2", 4), ("k1", 5)):
        replace(fresh, batches_done=2).write(folder / STATE_FILE)
        (folder / "1-onnx.npy").write_bytes(b"rows")
        assert _resume_state(folder, key, batch, 10) == _State(key, batch, 10)
        assert not (folder / "1-onnx.npy").exists()


def test_an_unreadable_state_starts_the_pass_again(tmp_path: Path) -> None:
    folder = tmp_path / "outputs"
    _resume_state(folder, "k", 4, 10)
    (folder / STATE_FILE).write_text("{not json")
    assert _resume_state(folder, "k", 4, 10).batches_done == 0


@pytest.mark.workers
def test_the_batch_size_changes_no_label(tiny_onnx: Path, tmp_path: Path) -> None:
    """A model fed one image at a time computes in other kernels than fed eight: outputs may
    move in the last float bits, the labels and the counts may not."""
    base = RunConfig(model=str(tiny_onnx), dst="torch", cache_dir=tmp_path / "cache")
    one = run(replace(base, out=tmp_path / "one", stream_batch=1, keep_outputs=True))
    many = run(replace(base, out=tmp_path / "many", keep_outputs=True))
    assert (one.stream["batches"], many.stream["batches"]) == (16, 1)
    floats = {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "kendall_tau_top5": 0.0}
    assert replace(one.chain[0].agreement, **floats) == replace(many.chain[0].agreement, **floats)
    assert one.max_abs_diff == pytest.approx(many.max_abs_diff, abs=1e-6)
    assert one.images == many.images == 16
    rows_one, rows_many = (
        np.load(tmp_path / r / "outputs" / "1-torch.npy") for r in ("one", "many")
    )
    for field in ("src_top", "dst_top"):
        np.testing.assert_array_equal(rows_one[field], rows_many[field])
    for name in ("y-0-onnx.npy", "y-1-torch.npy"):
        np.testing.assert_allclose(
            np.load(tmp_path / "one" / "outputs" / name),
            np.load(tmp_path / "many" / "outputs" / name),
            atol=1e-5,
        )
    assert not (tmp_path / "one" / "inputs").exists()  # inputs are kept only when asked
