"""``--sample N --seed S``: a stratified, seeded subset chosen before the files are decoded; the
readability check on a process pool gives the same answers as in-process."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convdiff.cli import cli
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import ImageOptions
from convdiff.inputs import data, scan
from convdiff.inputs.data import image_folder, load_images
from convdiff.inputs.sampling import sample_indices, shares

GROUPS = [0] * 10 + [1] * 6 + [2] * 4


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((3, 4, 3), value, np.uint8)).save(path)
    return path


# --- the draw ---------------------------------------------------------------------------------


def test_each_class_gets_its_share_exactly() -> None:
    picked = sample_indices(GROUPS, 10, seed=0)
    assert Counter(GROUPS[i] for i in picked) == {0: 5, 1: 3, 2: 2}
    assert picked == [0, 1, 6, 7, 9, 12, 13, 15, 16, 19]  # numpy's PCG64 streams are stable
    assert sample_indices(GROUPS, 10, seed=0) == picked  # the same seed, the same subset
    assert sample_indices(GROUPS, 10, seed=1) == [1, 2, 4, 6, 8, 11, 13, 15, 18, 19]


def test_equal_remainders_go_to_random_classes_not_the_first() -> None:
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]  # 2 of 4 classes get one image each
    draws = [sample_indices(groups, 2, seed) for seed in range(6)]
    assert draws == [[4, 7], [0, 4], [0, 7], [0, 2], [2, 7], [5, 6]]
    for draw in draws:
        assert len({groups[i] for i in draw}) == 2
    assert shares([10, 6, 4], 5, np.random.default_rng(0)) in ([3, 1, 1], [2, 2, 1])


def test_unlabelled_items_are_a_plain_seeded_sample_and_n_beyond_all_takes_all() -> None:
    assert sample_indices([None] * 12, 5, seed=0) == [0, 2, 3, 4, 11]
    assert sample_indices([None] * 12, 12, seed=3) == list(range(12))
    assert sample_indices([None] * 12, 50, seed=3) == list(range(12))


# --- a folder ---------------------------------------------------------------------------------


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    """Class-index subfolders of 10, 6 and 4 images."""
    for label, count in ((281, 10), (0, 6), (967, 4)):
        for i in range(count):
            _png(tmp_path / "images" / str(label) / f"{i:02d}.png", value=i * 20)
    return tmp_path / "images"


def test_a_sampled_folder_is_stratified_sorted_and_decodes_only_the_picks(
    classes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[int] = []

    def spy(paths: list[str], threads: int | None = None) -> list[str]:
        checked.append(len(paths))
        return scan.check_files(paths, threads)

    monkeypatch.setattr(data, "check_files", spy)
    records = image_folder(classes, sample=10, seed=0)
    assert checked == [10]  # 10 of the 20 files were test-decoded
    assert Counter(r.label for r in records) == {281: 5, 0: 3, 967: 2}
    assert [r.name for r in records] == sorted(r.name for r in records)
    again = image_folder(classes, sample=10, seed=0)
    other = image_folder(classes, sample=10, seed=1)
    assert [r.name for r in again] == [r.name for r in records]
    assert [r.name for r in other] != [r.name for r in records]
    assert Counter(r.label for r in other) == {281: 5, 0: 3, 967: 2}
    assert records.summary() == {
        "source": str(classes),
        "images": 10,
        "skipped": 0,
        "labelled": 10,
        "sample": 10,
        "seed": 0,
    }
    assert records.notes == ()


def test_unreadable_picks_are_skipped_and_counted_not_replaced(tmp_path: Path) -> None:
    for i in range(12):
        path = tmp_path / f"{i:02d}.jpg"
        if i % 3 == 0:
            path.write_bytes(b"not a jpeg")  # 00, 03, 06, 09
        else:
            Image.fromarray(np.full((3, 4, 3), i, np.uint8)).save(path)
    (tmp_path / "notes.txt").write_text("x")  # not an image: counted whether picked or not
    records = image_folder(tmp_path, sample=5, seed=0)  # picks 00 02 03 04 11
    assert [r.name for r in records] == ["02.jpg", "04.jpg", "11.jpg"]
    assert [s.name for s in records.skipped_files] == ["00.jpg", "03.jpg", "notes.txt"]
    assert (records.unreadable, records.not_images) == (2, 1)


def test_a_sample_beyond_the_folder_takes_all_with_a_note(classes: Path) -> None:
    records = image_folder(classes, sample=500, seed=0)
    assert len(records) == 20
    assert records.notes == (
        f"--sample 500 is not less than the 20 image files in {classes}: all are used",
    )


def test_limit_takes_the_first_of_the_sample(classes: Path) -> None:
    sampled = image_folder(classes, sample=10, seed=0)
    assert [r.name for r in image_folder(classes, sample=10, seed=0, limit=3)] == [
        r.name for r in sampled[:3]
    ]


def test_the_embedded_sample_set_can_be_sampled_too() -> None:
    everything = load_images()
    assert (len(everything), everything.source, everything.summary()["skipped"]) == (
        16,
        "embedded sample set",
        0,
    )
    assert "sample" not in everything.summary()
    picked = load_images(sample=4, seed=2)
    assert len(picked) == 4
    assert {r.name for r in picked} <= {r.name for r in everything}
    assert picked.summary()["sample"] == 4 and picked.summary()["seed"] == 2
    assert [r.name for r in load_images(sample=4, seed=2)] == [r.name for r in picked]
    assert len(load_images(limit=3)) == 3


# --- the readability check on a pool ----------------------------------------------------------


def test_the_threads_give_the_same_answers_in_the_same_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = []
    for i in range(30):
        path = tmp_path / f"{i:02d}.png"
        if i % 7 == 3:
            path.write_bytes(b"broken")
        else:
            _png(path, value=i)
        paths.append(str(path))
    monkeypatch.setattr(scan, "CHUNK", 4)
    serial = scan.check_files(paths, threads=1)
    assert scan.check_files(paths, threads=2) == serial
    assert [i for i, m in enumerate(serial) if m] == [3, 10, 17, 24]
    assert serial[3] == "UnidentifiedImageError: cannot identify image file"


def test_small_scans_stay_in_the_calling_thread() -> None:
    assert scan.threads_for(scan.POOL_MIN_FILES - 1) == 1
    assert scan.threads_for(50_000) == min(2, len(os.sched_getaffinity(0)))


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_refuses_a_sample_below_one_in_one_line(tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(
        cli, ["run", "mobilenetv2", "--src", "keras", "--dst", "tflite", "--sample", value]
    )
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: Invalid value for '--sample': {value} is not in the range x>=1. "
        "(see convdiff run --help)\n",
    )


def test_sample_and_seed_are_documented_in_help() -> None:
    for command in ("run", "table", "localize"):
        text = CliRunner().invoke(cli, [command, "--help"]).output
        assert "--sample INTEGER" in text and "--seed INTEGER" in text
    run_help = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    assert "Seed of random weights and of --sample's pick." in run_help


def test_the_options_group_refuses_a_sample_below_one_and_a_bad_seed() -> None:
    for options, message in (
        (ImageOptions(sample=0), "--sample must be 1 or more, got 0; pass e.g. --sample 500"),
        (ImageOptions(seed=-1), "--seed must be from 0 to 4294967295, got -1; pass e.g. --seed 0"),
        (ImageOptions(seed=True), "--seed must be an integer, got True; pass --seed 0"),
    ):
        with pytest.raises(ConvdiffError) as caught:
            options.check()
        assert str(caught.value) == message


@pytest.mark.workers
def test_a_run_records_sample_and_seed(tiny_onnx: Path, tmp_path: Path) -> None:
    for label, count in ((281, 4), (0, 2)):
        for i in range(count):
            _png(tmp_path / "images" / str(label) / f"{i}.png", value=40 * i)
    result = CliRunner().invoke(
        cli,
        ["run", str(tiny_onnx), "--dst", "torch", "--data", str(tmp_path / "images"),
         "--sample", "3", "--seed", "5", "--out", str(tmp_path / "run"),
         "--cache-dir", str(tmp_path / "cache"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"] == {
        "source": str(tmp_path / "images"),
        "images": 3,
        "skipped": 0,
        "labelled": 3,
        "sample": 3,
        "seed": 5,
    }
    assert f"images: 3 from {tmp_path / 'images'} (--sample 3 --seed 5)" in result.output
