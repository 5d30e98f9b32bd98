"""ImageNet's validation layouts: WordNet-id folders, and a flat folder with each ground-truth
file ILSVRC ships (Caffe's val.txt, LOC_val_solution.csv, the devkit's ground truth + meta.mat)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from PIL import Image

from convdiff.cli import cli
from convdiff.core.errors import DataError
from convdiff.inputs.data import image_folder
from tests.tiny.onnx_models import tiny_classifier

META_FIX = "put the devkit's data/meta.mat (ILSVRC2012_devkit_t12.tar.gz) beside it"


def _jpeg(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(path, format="JPEG")
    return path


def _flat_val(folder: Path, count: int) -> Path:
    """ILSVRC2012_val_00000001.JPEG ... in one folder, as the validation tarball unpacks."""
    for i in range(1, count + 1):
        _jpeg(folder / f"ILSVRC2012_val_{i:08d}.JPEG", value=i * 10)
    return folder


def _meta(path: Path, rows: list[tuple[int, str, str, int]]) -> Path:
    """A devkit meta.mat: the struct array ``synsets`` (ILSVRC2012_ID, WNID, words,
    num_children, ...), one row per synset, as a 1-column MATLAB struct array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array(rows, dtype=fields).reshape(-1, 1)
    scipy.io.savemat(path, {"synsets": synsets})
    return path


META_ROWS = [
    (1, "n02123045", "tabby, tabby cat", 0),  # class 281
    (2, "n01440764", "tench, Tinca tinca", 0),  # class 0
    (3, "n07920052", "espresso", 0),  # class 967
    (4, "n15075141", "toilet tissue, toilet paper, bathroom tissue", 0),  # class 999
    (1001, "n00001740", "entity", 3),  # not a leaf: not a class
]


def _labels(folder: Path, labels: Path | None = None, **kw: object) -> list[tuple]:
    return [(r.name, r.label, r.accepted) for r in image_folder(folder, labels, **kw)]


def _message(folder: Path, labels: Path) -> str:
    with pytest.raises(DataError) as caught:
        image_folder(folder, labels)
    return str(caught.value)


def test_flat_folder_with_caffe_val_txt(tmp_path: Path) -> None:
    images = _flat_val(tmp_path / "val", 3)
    val = tmp_path / "val.txt"
    val.write_text(
        "ILSVRC2012_val_00000001.JPEG 65\n"
        "ILSVRC2012_val_00000002.JPEG 970\n"
        "ILSVRC2012_val_00000003.JPEG 230\n"
        "ILSVRC2012_val_00000004.JPEG 809\n"  # not in the folder: ignored
    )
    assert _labels(images, val) == [
        ("ILSVRC2012_val_00000001.JPEG", 65, (65,)),
        ("ILSVRC2012_val_00000002.JPEG", 970, (970,)),
        ("ILSVRC2012_val_00000003.JPEG", 230, (230,)),
    ]


def test_flat_folder_with_loc_val_solution_csv(tmp_path: Path) -> None:
    images = _flat_val(tmp_path / "val", 3)
    solution = tmp_path / "LOC_val_solution.csv"
    solution.write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000002,n01440764 10 20 30 40 \n"
        "ILSVRC2012_val_00000001,n02123045 1 2 3 4 n02123159 5 6 7 8 n02123045 0 0 2 2\n"
        "ILSVRC2012_val_00000009,n07920052 1 1 2 2\n"  # not in the folder: ignored
    )
    assert _labels(images, solution) == [
        ("ILSVRC2012_val_00000001.JPEG", 281, (281, 282)),  # every box's class counts
        ("ILSVRC2012_val_00000002.JPEG", 0, (0,)),
        ("ILSVRC2012_val_00000003.JPEG", None, ()),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            "ILSVRC2012_val_00000001,1 2 3 4",
            ":2: bad line 'ILSVRC2012_val_00000001,1 2 3 4'; expected 'ImageId,<WordNet id> x y "
            "x y ...' (ILSVRC's LOC_val_solution.csv)",
        ),
        (
            "ILSVRC2012_val_00000001,n99999999 1 2 3 4",
            ":2: n99999999 is not one of the 1000 ImageNet-1k WordNet ids; convdiff labels the "
            "1000 ILSVRC2012 classes",
        ),
    ],
)
def test_a_bad_loc_val_solution_line(tmp_path: Path, line: str, problem: str) -> None:
    images = _flat_val(tmp_path / "val", 1)
    solution = tmp_path / "LOC_val_solution.csv"
    solution.write_text(f"ImageId,PredictionString\n{line}\n")
    assert _message(images, solution) == f"{solution}{problem}"


def test_flat_folder_with_devkit_ground_truth_and_meta_beside_it(tmp_path: Path) -> None:
    images = _flat_val(tmp_path / "val", 4)
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    truth = data / "ILSVRC2012_validation_ground_truth.txt"
    _meta(data / "meta.mat", META_ROWS)
    truth.write_text("1\n2\n3\n1\n4\n")  # line i: ILSVRC2012_ID of ILSVRC2012_val_{i:08d}
    assert _labels(images, truth) == [
        ("ILSVRC2012_val_00000001.JPEG", 281, (281,)),
        ("ILSVRC2012_val_00000002.JPEG", 0, (0,)),
        ("ILSVRC2012_val_00000003.JPEG", 967, (967,)),
        ("ILSVRC2012_val_00000004.JPEG", 281, (281,)),
    ]


def test_devkit_ground_truth_finds_meta_in_the_devkits_data_folder(tmp_path: Path) -> None:
    images = _flat_val(tmp_path / "val", 2)
    devkit = tmp_path / "devkit"
    _meta(devkit / "data" / "meta.mat", META_ROWS)
    truth = devkit / "elsewhere" / "ILSVRC2012_validation_ground_truth.txt"
    truth.parent.mkdir()
    truth.write_text("4\n3\n")
    assert [label for _, label, _ in _labels(images, truth)] == [999, 967]


def test_devkit_ground_truth_without_meta_mat_or_with_an_unknown_id(tmp_path: Path) -> None:
    images = _flat_val(tmp_path / "val", 2)
    truth = tmp_path / "gt" / "ILSVRC2012_validation_ground_truth.txt"
    truth.parent.mkdir()
    truth.write_text("1\n2\n")
    assert _message(images, truth) == (
        f"{truth} holds ILSVRC2012_IDs, whose classes are in the devkit's meta.mat, found "
        f"neither at {tmp_path / 'gt' / 'meta.mat'} nor at {tmp_path / 'data' / 'meta.mat'}; "
        + META_FIX
    )
    _meta(tmp_path / "gt" / "meta.mat", META_ROWS)
    truth.write_text("1\n1001\n")  # a synset of meta.mat that is not one of the 1000 classes
    assert _message(images, truth) == (
        f"{truth}:2: ILSVRC2012_ID 1001 is not one of the 1000 classes of "
        f"{tmp_path / 'gt' / 'meta.mat'}; use the ground truth and meta.mat of the same "
        "ILSVRC2012 devkit"
    )
    (tmp_path / "gt" / "meta.mat").write_bytes(b"not a mat file")
    assert _message(images, truth).startswith(
        f"{tmp_path / 'gt' / 'meta.mat'} is not the devkit's meta.mat ("
    )


def test_cli_names_the_missing_meta_mat_in_one_line(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    images = _flat_val(tmp_path / "val", 2)
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("1\n2\n")
    result = CliRunner().invoke(
        cli,
        ["run", str(model), "--dst", "torch", "--data", str(images), "--labels", str(truth),
         "--out", str(tmp_path / "r"), "--quiet"],
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {truth} holds ILSVRC2012_IDs, whose classes are in the devkit's meta.mat, "
        f"found neither at {tmp_path / 'meta.mat'} nor at {tmp_path.parent / 'data' / 'meta.mat'}"
        f"; {META_FIX}\n",
    )


def test_wordnet_id_folders_of_a_few_classes_with_a_sample(tmp_path: Path) -> None:
    # the ImageNet train/val layout reduced to three classes, sampled down
    for wnid, count in (("n15075141", 2), ("n01440764", 4), ("n02123045", 2)):
        for i in range(count):
            _jpeg(tmp_path / wnid / f"{wnid}_{i}.JPEG", value=i * 30)
    records = image_folder(tmp_path, sample=4, seed=0)
    assert sorted(r.label for r in records) == [0, 0, 281, 999]  # 4 of 8: 2, 1, 1
    assert [r.name for r in records] == sorted(r.name for r in records)
