"""convdiff.frameworks.torch through the worker pool: save, load, describe, predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import eager_outputs, infer, torch_images

TINY = "tests.tiny.torch_models"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five seeded NHWC images for the tiny 3x16x16 model."""
    return torch_images(tmp_path_factory.mktemp("torch-images") / "x.npz", 5)


@pytest.fixture(scope="module")
def eager(pool: WorkerPool, images: Path) -> np.ndarray:
    """The eager module's outputs: the reference every saved form must reproduce."""
    return eager_outputs(pool, images)


def _predict(pool: WorkerPool, path: str, images: Path) -> np.ndarray:
    out = images.parent / f"{Path(path).stem}-y.npz"
    return infer(pool, "torch", path, images, out, layout="NCHW", batch_size=2)


def test_save_writes_pt2_with_a_dynamic_batch(pool: WorkerPool, tmp_path: Path) -> None:
    saved = pool.call("torch", f"{TINY}:make_tiny", out_dir=str(tmp_path))
    assert saved, saved.message
    assert saved.value == {
        "path": str(tmp_path / "tiny.pt2"),
        "format": "torch.export",
        "dynamic_batch": True,
        "fallback_reason": "",
    }
    probe = client.probe(pool, "torch", saved.value["path"])
    assert probe, probe.message
    assert probe.value["input_shape"] == [None, 3, 16, 16]
    assert probe.value["output_shape"] == [None, 5]
    assert probe.value["input_name"] == "input"
    assert probe.value["input_dtype"] == "float32"
    assert probe.value["format"] == "torch.export"


def test_pt2_predicts_what_the_eager_module_does(
    pool: WorkerPool, tiny_pt2: str, images: Path, eager: np.ndarray
) -> None:
    y = _predict(pool, tiny_pt2, images)
    assert y.shape == (5, 5)
    assert np.abs(y - eager).max() < 1e-6
    assert len({int(i) for i in y.argmax(1)}) > 1  # the tiny model is not constant


def test_foreign_torchscript_has_no_shape_but_predicts(
    pool: WorkerPool, tmp_path: Path, images: Path, eager: np.ndarray
) -> None:
    saved = pool.call("torch", f"{TINY}:make_tiny", out_dir=str(tmp_path), fmt="pt")
    probe = client.probe(pool, "torch", saved.value["path"])
    assert probe, probe.message
    assert probe.value["input_shape"] is None
    assert probe.value["output_shape"] is None
    assert probe.value["format"] == "torchscript"
    assert probe.value["notes"] == ["TorchScript file records no input shape"]
    assert np.abs(_predict(pool, saved.value["path"], images) - eager).max() < 1e-6


def test_unexportable_module_falls_back_to_torchscript(pool: WorkerPool, tmp_path: Path) -> None:
    saved = pool.call("torch", f"{TINY}:save_unexportable", out_dir=str(tmp_path))
    assert saved, saved.message
    assert saved.value["path"] == str(tmp_path / "branchy.pt")
    assert (saved.value["format"], saved.value["dynamic_batch"]) == ("torchscript", False)
    reasons = saved.value["fallback_reason"].split("; ")
    assert [r.split(":")[0] for r in reasons] == [
        "torch.export (dynamic batch)",
        "torch.export (fixed batch)",
    ]
    assert all("GuardOnDataDependentSymNode" in r for r in reasons)
    probe = client.probe(pool, "torch", saved.value["path"])
    # from the archive's shape record; a trace may bake its batch size in, so it says 1
    assert probe.value["input_shape"] == [1, 3, 16, 16]
    assert probe.value["output_shape"] == [1, 4 * 14 * 14]


def test_fixed_batch_program_predicts_in_chunks(
    pool: WorkerPool, tmp_path: Path, images: Path, eager: np.ndarray
) -> None:
    saved = pool.call("torch", f"{TINY}:save_fixed_batch", out_dir=str(tmp_path))
    assert saved, saved.message
    assert (saved.value["format"], saved.value["dynamic_batch"]) == ("torch.export", False)
    assert saved.value["fallback_reason"].startswith("torch.export (dynamic batch):")
    probe = client.probe(pool, "torch", saved.value["path"])
    assert probe.value["input_shape"] == [1, 3, 16, 16]
    assert np.abs(_predict(pool, saved.value["path"], images) - eager).max() < 1e-6


def test_state_dict_is_refused_with_a_fix(pool: WorkerPool, tmp_path: Path) -> None:
    outcome = pool.call("torch", f"{TINY}:save_state_dict", out_dir=str(tmp_path))
    assert outcome, outcome.message
    probe = client.probe(pool, "torch", outcome.value)
    assert not probe
    assert probe.error_type == "ConvdiffError"
    assert probe.message == (
        "tiny.pth holds OrderedDict, not a model (a state_dict has no architecture); "
        "export the model with torch.export (.pt2), or give a zoo name with --weights PATH"
    )
