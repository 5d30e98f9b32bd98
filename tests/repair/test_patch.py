"""The repair patch format: JSON + .npz round trip, the reader's errors, the diff view."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convdiff.core.errors import ConvdiffError
from convdiff.repair import Edit, Patch, diff_view, sha256_of, tensor_summary


def _patch(tmp_path: Path) -> Patch:
    target, source = tmp_path / "model.onnx", tmp_path / "model.keras"
    target.write_bytes(b"target bytes")
    source.write_bytes(b"source bytes")
    rng = np.random.default_rng(0)
    old_w = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
    new_w = old_w.copy()
    new_w[0, 0, 0, 0] += 0.031
    edits = [
        Edit(
            "set_tensor",
            "conv2",
            "weight",
            "conv2.weight",
            tensor_summary(old_w, new_w),
            "weights",
            "precision",
            "int8 grid in the target",
        ),
        Edit("set_tensor", "conv2", "bias", "conv2.bias", tensor_summary(None), "weights"),
        Edit("set_tensor", "fc", "weight", "fc.weight", tensor_summary(np.zeros((11, 8)))),
        Edit("set_attr", "pool1", "pads", [0, 0, 0, 0], [0, 0, 1, 1], "hyperparams", "pads"),
        Edit("set_attr", "bn1", "epsilon", 0.001, 1e-05, "hyperparams", "epsilon"),
        Edit("remove_node", "dropout1", stage="graph", kind="extra_layer"),
        Edit("preprocessing", "", "mean", [0.485, 0.456, 0.406], [0.5, 0.5, 0.5], "inputs"),
    ]
    tensors = {
        "conv2.weight": new_w,
        "conv2.bias": np.zeros(8, np.float32),
        "fc.weight": np.ones((10, 8), np.float32),
    }
    return Patch.for_files(target, "onnx", source, edits, tensors, notes=["a note"])


def test_round_trip_keeps_every_field_and_tensor(tmp_path: Path) -> None:
    patch = _patch(tmp_path)
    path = patch.save(tmp_path / "out" / "repair.json")
    assert path.with_suffix(".npz").exists()
    data = json.loads(path.read_text())
    assert list(data) == [
        "schema_version",
        "convdiff_version",
        "created",
        "target",
        "source",
        "edits",
        "notes",
    ]
    assert data["schema_version"] == 1
    assert data["target"] == {
        "name": "model.onnx",
        "format": "onnx",
        "sha256": sha256_of(tmp_path / "model.onnx"),
    }
    assert path.read_text().startswith('{\n  "schema_version": 1,')  # indent 2
    loaded, tensors = Patch.load(path)
    assert loaded == patch  # tensors are compared apart
    assert sorted(tensors) == sorted(patch.tensors)
    for key, value in patch.tensors.items():
        np.testing.assert_array_equal(tensors[key], value)
        assert tensors[key].dtype == value.dtype
    assert loaded.tensors.keys() == tensors.keys()


def test_sha256_of_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_of(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"x")
    first = sha256_of(folder)
    (folder / "variables" / "v").write_bytes(b"y")
    assert sha256_of(folder) != first


def test_diff_view_lines_are_exact(tmp_path: Path) -> None:
    patch = _patch(tmp_path)
    assert diff_view(patch).splitlines() == [
        "conv2.weight: set from source (8x8x3x3 float32, max |change| 0.031)",
        "conv2.bias: set from source (8 float32, new: the file had none)",
        "fc.weight: set from source (10x8 float32, was 11x8 float64)",
        "pool1.pads: [0,0,1,1] -> [0,0,0,0]",
        "bn1.epsilon: 1e-05 -> 0.001",
        "dropout1: remove node (its consumers take its input)",
        "preprocessing mean: [0.5,0.5,0.5] -> [0.485,0.456,0.406] "
        "(apply in your input pipeline; not written into the model)",
    ]
    loaded, tensors = Patch.load(patch.save(tmp_path / "p.json"))
    assert diff_view(loaded, tensors) == diff_view(patch)


def test_reader_errors_name_the_fix(tmp_path: Path) -> None:
    patch = _patch(tmp_path)
    path = patch.save(tmp_path / "p.json")
    path.with_suffix(".npz").unlink()
    with pytest.raises(ConvdiffError, match=r"tensor file .*p\.npz is missing") as err:
        Patch.load(path)
    assert err.value.fix == "keep p.npz beside p.json"

    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(ConvdiffError, match="schema_version 2; this convdiff reads 1"):
        Patch.load(path)

    data["edits"] = [{"action": "rename_node", "layer": "x"}]
    path.write_text(json.dumps(data))
    with pytest.raises(ConvdiffError, match="unknown action 'rename_node'"):
        Patch.load(path)

    path.write_text("{not json")
    with pytest.raises(ConvdiffError, match="is not JSON"):
        Patch.load(path)
    with pytest.raises(ConvdiffError, match="does not exist"):
        Patch.load(tmp_path / "absent.json")


def test_a_patch_without_tensors_needs_no_npz(tmp_path: Path) -> None:
    patch = _patch(tmp_path)
    patch.edits = [e for e in patch.edits if e.action != "set_tensor"]
    patch.tensors = {}
    path = patch.save(tmp_path / "attrs.json")
    assert not path.with_suffix(".npz").exists()
    loaded, tensors = Patch.load(path)
    assert tensors == {} and len(loaded.edits) == 4


def test_saving_refuses_an_edit_without_its_tensor(tmp_path: Path) -> None:
    patch = _patch(tmp_path)
    patch.tensors.pop("fc.weight")
    with pytest.raises(ValueError, match="fc.weight"):
        patch.save(tmp_path / "p.json")
