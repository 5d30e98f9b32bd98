"""Images: the embedded sample set, image folders with their labels and errors, decoding."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convdiff.core.errors import DataError
from convdiff.inputs import data, imagenet
from convdiff.inputs.data import ImageRecord, class_name, decode, image_folder, sample_set

FORM = "expected '<image file> <class index 0..999 or class name>'"


def _png(path: Path, value: int = 128, size: tuple[int, int] = (4, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _message(folder: Path, labels: Path | None = None) -> str:
    with pytest.raises(DataError) as caught:
        image_folder(folder, labels)
    return str(caught.value)


# --- class names ----------------------------------------------------------------------------


def test_class_names_are_torchvisions_1000() -> None:
    names = data.class_names()
    assert len(names) == 1000 == len(set(names))
    assert (class_name(0), class_name(281), class_name(967), class_name(999)) == (
        "tench",
        "tabby",
        "espresso",
        "toilet tissue",
    )
    assert data.class_index("tiger cat") == 282
    assert data.class_index("Tiger Cat") == 282
    assert data.class_index("kitty") is None
    with pytest.raises(DataError, match=r"^class index 1000 is out of range; class indices run"):
        class_name(1000)


# --- the embedded sample set ----------------------------------------------------------------

LABELS = {
    "camera.png": (872, 869),
    "chelsea.png": (281, 282, 285),
    "clock_motion.png": (892, 409),
    "coffee.png": (967, 968, 504),
    "motorcycle_left.png": (665, 670),
    "motorcycle_right.png": (665, 670),
    "rocket.jpg": (657, 744),
}


def test_sample_set_is_16_labelled_photographs_found_without_importing_skimage() -> None:
    imported_before = "skimage" in sys.modules
    records = sample_set()
    assert len(records) == 16
    assert [r.name for r in records] == sorted(r.name for r in records)
    assert {r.name: r.accepted for r in records if r.accepted} == LABELS
    for record in records:
        assert record.label == (record.accepted[0] if record.accepted else None)
        assert all(0 <= i < 1000 for i in record.accepted)
        assert Path(record.path).is_absolute()
        assert Path(record.path).parent.name == "data"
        assert Path(record.path).parent.parent.name == "skimage"
    assert ("skimage" in sys.modules) == imported_before


def test_sample_set_files_are_the_ones_labelled_and_all_decode() -> None:
    manifest = json.loads((data._DATA_DIR / "sample_set.json").read_text())
    by_name = {e["name"]: e for e in manifest["images"]}
    for record in sample_set():
        entry = by_name[record.name]
        digest = hashlib.sha256(Path(record.path).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{record.name} differs from the labelled file"
        assert entry.get("classes", []) == [class_name(i) for i in record.accepted]
        pixels = decode(record)
        assert pixels.dtype == np.uint8
        assert pixels.ndim == 3 and pixels.shape[2] == 3
        assert min(pixels.shape[:2]) >= 300
    # a grayscale sample comes back with three equal channels
    camera = decode(next(r for r in sample_set() if r.name == "camera.png"))
    assert camera.shape == (512, 512, 3)
    assert (camera[..., 0] == camera[..., 1]).all() and (camera[..., 1] == camera[..., 2]).all()


# --- image folders: layouts and labels ------------------------------------------------------


def test_loose_images_are_sorted_recursive_and_unlabelled(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "sub/c.png", "sub/deeper/d.bmp"):
        _png(tmp_path / name)
    records = image_folder(tmp_path)
    assert [r.name for r in records] == ["a.jpg", "b.png", "sub/c.png", "sub/deeper/d.bmp"]
    assert all(r.label is None and r.accepted == () for r in records)
    assert records[0].path == str((tmp_path / "a.jpg").resolve())
    assert records.skipped == 0
    assert records.records == list(records)


def test_class_index_and_class_name_subfolders_give_labels(tmp_path: Path) -> None:
    _png(tmp_path / "281" / "x.png")
    _png(tmp_path / "tiger cat" / "y.png")
    _png(tmp_path / "967" / "more" / "z.png")
    _png(tmp_path / "top.png")
    records = {r.name: (r.label, r.accepted) for r in image_folder(tmp_path)}
    assert records == {
        "281/x.png": (281, (281,)),
        "967/more/z.png": (967, (967,)),
        "tiger cat/y.png": (282, (282,)),
        "top.png": (None, ()),
    }


def test_a_subfolder_that_names_no_class_beside_ones_that_do_is_an_error(tmp_path: Path) -> None:
    _png(tmp_path / "281" / "x.png")
    _png(tmp_path / "kitties" / "y.png")
    assert _message(tmp_path) == (
        "subfolder 'kitties' names no ImageNet class, while '281' does; "
        "name every class subfolder by class index 0..999, exact class name or WordNet id"
    )


def test_a_class_subfolder_out_of_range_is_an_error(tmp_path: Path) -> None:
    _png(tmp_path / "281" / "x.png")
    _png(tmp_path / "1000" / "y.png")
    assert _message(tmp_path) == (
        "class subfolder '1000' is out of range; "
        "class subfolders are named by class index 0..999, class name or WordNet id"
    )


def test_wordnet_subfolders_of_any_subset_of_classes_map_to_their_indices(
    tmp_path: Path,
) -> None:
    _png(tmp_path / "n02123045" / "x.png")  # tabby
    _png(tmp_path / "n02124075" / "y.png")  # Egyptian cat
    _png(tmp_path / "n01440764" / "z.png")  # tench
    records = image_folder(tmp_path)
    assert [(r.name, r.label, r.accepted) for r in records] == [
        ("n01440764/z.png", 0, (0,)),
        ("n02123045/x.png", 281, (281,)),
        ("n02124075/y.png", 285, (285,)),
    ]
    _png(tmp_path / "n99999999" / "w.png")
    assert _message(tmp_path) == (
        "class subfolder 'n99999999' is not one of the 1000 ImageNet-1k WordNet ids; "
        "class subfolders are named by class index 0..999, class name or WordNet id"
    )


def test_wordnet_subfolders_with_a_synset_list_use_its_order(tmp_path: Path) -> None:
    # ILSVRC's LOC_synset_mapping.txt form (here made-up ids in class order)
    _png(tmp_path / "n02123045" / "x.png")
    _png(tmp_path / "n02124075" / "y.png")
    synsets = tmp_path.parent / "synsets.txt"
    ids = [f"n{9000000 + i:08d}" for i in range(1000)]
    ids[3], ids[5] = "n02123045", "n02124075"
    synsets.write_text("".join(f"{w} name {i}\n" for i, w in enumerate(ids)))
    records = image_folder(tmp_path, synsets)
    assert [(r.name, r.label) for r in records] == [("n02123045/x.png", 3), ("n02124075/y.png", 5)]
    _png(tmp_path / "n01440764" / "z.png")  # an ImageNet id, but not in this list
    assert _message(tmp_path, synsets) == (
        "class subfolder 'n01440764' is not in the WordNet-id list; "
        "class subfolders are named by class index 0..999, class name or WordNet id"
    )


def test_the_shipped_wordnet_ids_are_the_sorted_class_order() -> None:
    ids = imagenet.wnids()
    assert len(ids) == 1000 == len(set(ids)) and list(ids) == sorted(ids)
    assert (ids[0], ids[281], ids[967], ids[999]) == (
        "n01440764",
        "n02123045",
        "n07920052",
        "n15075141",
    )
    assert imagenet.wnid_class("n02123045") == 281
    assert imagenet.wnid_class("n99999999") is None


def test_all_1000_wordnet_subfolders_map_in_sorted_order(tmp_path: Path) -> None:
    ids = imagenet.wnids()
    image = tmp_path.parent / "one.png"
    _png(image, size=(1, 1))
    for wnid in reversed(ids):
        (tmp_path / wnid).mkdir()
        (tmp_path / wnid / "a.png").write_bytes(image.read_bytes())
    records = image_folder(tmp_path)
    assert [r.label for r in records] == list(range(1000))
    assert records[281].name == "n02123045/a.png"
    assert [(r.name, r.label) for r in image_folder(tmp_path, limit=3)] == [
        (f"{ids[i]}/a.png", i) for i in range(3)
    ]


def test_limit_stops_the_scan_after_that_many_readable_images(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    for name in ("b.png", "c.png", "d.png"):
        _png(tmp_path / name)
    (tmp_path / "e.jpg").write_bytes(b"garbage")  # after the limit: never looked at
    records = image_folder(tmp_path, limit=2)
    assert [r.name for r in records] == ["b.png", "c.png"]
    assert [s.name for s in records.skipped_files] == ["a.txt"]


def test_labels_file_by_name_path_index_class_name_wordnet_id_alternatives(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png", "d.png", "sub/e.png", "sub/f.png", "sub/g.png"):
        _png(tmp_path / name)
    labels = tmp_path / "labels.txt"  # inside the folder: not counted as a skipped file
    labels.write_text(
        "# file label\n"
        "\n"
        "a.png 281\n"
        "b.png tiger cat\n"
        "c.png 281, 282,285\n"
        "e.png 504\n"
        "sub/f.png 967\n"
        "g.png n02123159\n"
        "not-here.png 1\n"
    )
    records = image_folder(tmp_path, labels)
    assert [(r.name, r.label, r.accepted) for r in records] == [
        ("a.png", 281, (281,)),
        ("b.png", 282, (282,)),
        ("c.png", 281, (281, 282, 285)),
        ("d.png", None, ()),
        ("sub/e.png", 504, (504,)),
        ("sub/f.png", 967, (967,)),
        ("sub/g.png", 282, (282,)),
    ]
    assert records.skipped == 0


def test_labels_file_overrides_class_subfolders(tmp_path: Path) -> None:
    _png(tmp_path / "281" / "x.png")
    labels = tmp_path.parent / "val.txt"
    labels.write_text("x.png 3\n")
    assert [r.label for r in image_folder(tmp_path, labels)] == [3]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a.png 281\na.png\n", ":2: bad line 'a.png'"),
        ("a.png 1000\n", ":1: label 1000 is out of range 0..999"),
        ("a.png -1\n", ":1: label -1 is out of range 0..999"),
        ("a.png 281,1000\n", ":1: label 1000 is out of range 0..999"),
        (
            "a.png kitty\n",
            ":1: label 'kitty' is neither a class index 0..999 nor an ImageNet class name",
        ),
        (
            "a.png n99999999\n",
            ":1: label 'n99999999' is not one of the 1000 ImageNet-1k WordNet ids",
        ),
    ],
)
def test_a_bad_labels_line_names_file_line_and_form(
    tmp_path: Path, text: str, problem: str
) -> None:
    _png(tmp_path / "images" / "a.png")
    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    assert _message(tmp_path / "images", labels) == f"{labels}{problem}; {FORM}"


def test_labels_file_missing_empty_or_matching_nothing(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png")
    missing = tmp_path / "nope.txt"
    assert _message(tmp_path / "images", missing) == (
        f"labels file {missing} does not exist; pass an existing file with --labels"
    )
    assert _message(tmp_path / "images", tmp_path) == (
        f"labels file {tmp_path} is not a file; pass a text file with --labels"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    assert _message(tmp_path / "images", empty) == f"labels file {empty} has no label lines; {FORM}"
    other = tmp_path / "other.txt"
    other.write_text("b.png 1\nsub/a.png 2\n")
    assert _message(tmp_path / "images", other) == (
        f"labels file {other} names none of the 1 images in {tmp_path / 'images'}; its lines "
        "must start with the image's path relative to the folder or its file name"
    )


# --- image folders: what is skipped and what is fatal ---------------------------------------


def test_non_image_and_corrupt_files_are_skipped_and_counted(tmp_path: Path) -> None:
    _png(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg at all")
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path.parent / "noisy.png")
    whole = (tmp_path.parent / "noisy.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])  # opens, fails on load
    Image.fromarray(noisy).save(tmp_path.parent / "noisy.jpg", quality=95)
    whole = (tmp_path.parent / "noisy.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[: len(whole) // 2])  # also in draft mode
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")  # hidden: ignored, not counted
    records = image_folder(tmp_path)
    assert [r.name for r in records] == ["good.png"]
    assert records.skipped == 4
    assert (records.not_images, records.unreadable) == (1, 3)
    reasons = {s.name: s.reason for s in records.skipped_files}
    assert reasons["notes.txt"] == "not an image"
    assert reasons["broken.jpg"] == (
        "unreadable image: UnidentifiedImageError: cannot identify image file"
    )
    assert reasons["truncated.png"] == "unreadable image: OSError: image file is truncated"
    assert reasons["truncated.jpg"].startswith("unreadable image: OSError: image file is truncated")
    assert records.describe_skipped() == (
        "skipped 4 files (1 not images, 3 unreadable), e.g. broken.jpg: " + reasons["broken.jpg"]
    )


def test_folder_missing_or_a_file(tmp_path: Path) -> None:
    assert _message(tmp_path / "nope") == (
        f"image folder {tmp_path / 'nope'} does not exist; "
        "pass an existing folder with --data, or leave --data out to use the sample set"
    )
    file = _png(tmp_path / "a.png")
    assert _message(file) == (
        f"{file} is a file, not a folder; pass the folder that holds the images with --data"
    )


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").write_text("x")
    assert _message(tmp_path) == (
        f"image folder {tmp_path} is empty; put .jpg or .png images in it "
        "(subfolders are searched too)"
    )


def test_folder_without_a_readable_image(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    (tmp_path / "c.csv").write_text("x")
    assert _message(tmp_path) == (
        f"no readable image in {tmp_path}: skipped 3 files (2 not images, 1 unreadable), "
        "e.g. b.jpg: unreadable image: UnidentifiedImageError: cannot identify image file; "
        "convdiff reads .bmp .gif .jpe .jpeg .jpg .pgm .png .ppm .tif .tiff .webp files"
    )


# --- decoding -------------------------------------------------------------------------------


def _decode_saved(tmp_path: Path, image: Image.Image, name: str, **save: object) -> np.ndarray:
    image.save(tmp_path / name, **save)
    return decode(ImageRecord(name, str(tmp_path / name)))


def test_decode_converts_every_mode_to_rgb_uint8(tmp_path: Path) -> None:
    gray = _decode_saved(tmp_path, Image.fromarray(np.array([[0, 90]], np.uint8), "L"), "g.png")
    np.testing.assert_array_equal(gray, [[[0, 0, 0], [90, 90, 90]]])

    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], np.uint8)
    out = _decode_saved(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png")
    np.testing.assert_array_equal(out, rgba[..., :3])  # alpha dropped, as torchvision does

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([1, 0])
    out = _decode_saved(tmp_path, palette, "p.png", transparency=0)
    np.testing.assert_array_equal(out, [[[0, 0, 255], [255, 0, 0]]])

    wide = Image.fromarray(np.array([[0, 0x1234, 0xFFFF]], np.uint16))
    assert wide.mode.startswith("I;16")
    out = _decode_saved(tmp_path, wide, "w.png")
    np.testing.assert_array_equal(out, [[[0, 0, 0], [0x12, 0x12, 0x12], [255, 255, 255]]])
    assert out.dtype == np.uint8 and out.flags.c_contiguous


def test_decode_applies_exif_orientation(tmp_path: Path) -> None:
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = _decode_saved(tmp_path, Image.fromarray(stored, "L"), "r.png", exif=exif)
    assert out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out[..., 0], [[120, 0], [160, 40], [200, 80]])


def test_decode_of_a_broken_file_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"^cannot decode image .*x\.jpg: cannot identify"):
        decode(ImageRecord("x.jpg", str(tmp_path / "x.jpg")))
