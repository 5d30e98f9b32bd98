"""Preprocessing: resize, crop, normalization and channel order, checked against hand-computed
pixels and, in a torch worker, against torchvision's own ImageNet evaluation transform."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convdiff.core.errors import ConvdiffError
from convdiff.inputs import data, preprocess
from convdiff.inputs.preprocess import PRESETS, PreprocessSpec, apply, batch, from_options

# A 2-row, 4-column RGB image whose bilinear reductions come out as whole numbers.
R = [[0, 70, 140, 210], [14, 28, 42, 56]]
G = [[255, 185, 115, 45], [241, 227, 213, 199]]
IMAGE = np.stack([np.array(R), np.array(G), np.full((2, 4), 100)], axis=-1).astype(np.uint8)


def _plain(size: tuple[int, int], **fields: object) -> PreprocessSpec:
    """x/255 only, so the resize alone decides the output."""
    return PreprocessSpec(size=size, **fields)  # type: ignore[arg-type]


def test_stretch_is_pil_bilinear_with_its_antialiasing_weights() -> None:
    # PIL's bilinear filter reducing 4 -> 2 columns spans 3 input pixels per output pixel
    # (weights 3/7, 3/7, 1/7 at the left edge, 1/7, 3/7, 3/7 at the right), 2 -> 1 rows is the
    # mean of both rows. Red row 0: (3*0 + 3*70 + 140)/7 = 50, (70 + 3*140 + 3*210)/7 = 160;
    # row 1: 24, 46; averaged: 37, 103. Green likewise: 218, 152. Blue stays 100.
    out = apply(_plain((1, 2)), IMAGE)
    expected = np.array([[[37, 218, 100], [103, 152, 100]]], np.float32) / np.float32(255)
    assert out.dtype == np.float32
    assert out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out, expected)


def test_bicubic_interpolation_is_pils_and_is_said() -> None:
    """timm's configs mostly resize bicubic; a spec says so and PIL's bicubic filter does it."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    spec = _plain((4, 6), interpolation="bicubic")
    expected = Image.fromarray(image).resize((6, 4), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(
        apply(spec, image), np.asarray(expected, np.float32) / np.float32(255)
    )
    assert not np.array_equal(apply(spec, image), apply(_plain((4, 6)), image))
    assert spec.describe().startswith("custom 4x6 stretch bicubic, ")
    assert _plain((4, 6)).describe().startswith("custom 4x6 stretch, ")  # bilinear: unsaid
    with pytest.raises(ConvdiffError, match="unknown interpolation 'lanczos'"):
        apply(_plain((4, 6), interpolation="lanczos"), image)


def test_center_crop_resizes_the_short_side_then_cuts_the_centre() -> None:
    # crop_fraction 1.0: short side (2 rows) -> round(1 / 1.0) = 1 row, long side int(1*4/2) = 2
    # columns, i.e. the stretch result above; the 1x1 centre has left = round(0.5) = 0.
    out = apply(_plain((1, 1), resize="center-crop", crop_fraction=1.0), IMAGE)
    np.testing.assert_array_equal(out * 255, [[[37, 218, 100]]])


def test_center_crop_uses_torchvisions_rounding_of_the_offsets() -> None:
    # crop_fraction 0.5: short side -> round(1 / 0.5) = 2 = unchanged, so no resampling; the
    # crop offsets are round((2-1)/2) = round(0.5) = 0 and round((4-1)/2) = round(1.5) = 2.
    out = apply(_plain((1, 1), resize="center-crop", crop_fraction=0.5), IMAGE)
    np.testing.assert_array_equal(out * 255, [[[140, 115, 100]]])
    # portrait: the same pixels transposed; short side is the width; rows 1..2 are kept
    tall = np.ascontiguousarray(IMAGE.transpose(1, 0, 2))
    out = apply(_plain((2, 2), resize="center-crop", crop_fraction=1.0), tall)
    np.testing.assert_array_equal(np.rint(out * 255), tall[1:3].astype(np.float32))


def test_center_crop_truncates_the_long_side_like_transforms_resize() -> None:
    # 3x5 image, short side -> 2: the long side is int(2 * 5 / 3) = 3, then a 2x2 crop
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((3, 2), Image.Resampling.BILINEAR))
    out = apply(_plain((2, 2), resize="center-crop", crop_fraction=1.0), image)
    # left = int(round((3 - 2) / 2)) = round(0.5) = 0
    np.testing.assert_array_equal(np.rint(out * 255), expected[:, 0:2].astype(np.float32))


def test_mean_and_std_are_applied_to_pixel_over_255_in_rgb_order() -> None:
    pixel = np.array([[[0, 51, 255]]], np.uint8)
    spec = _plain((1, 1), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    # R (0 - 0.5) / 0.5 = -1; G (0.2 - 0.25) / 0.25 = -0.2; B (1 - 0) / 2 = 0.5
    np.testing.assert_allclose(apply(spec, pixel), [[[-1.0, -0.2, 0.5]]], rtol=0, atol=1e-6)


def test_bgr_swaps_channels_after_normalizing_with_rgb_mean() -> None:
    pixel = np.array([[[200, 100, 50]]], np.uint8)
    spec = preprocess.preset("caffe", size=(1, 1))
    # caffe: x - mean*255 per channel, i.e. R 200-123.68, G 100-116.779, B 50-103.939, as BGR
    np.testing.assert_allclose(apply(spec, pixel), [[[-53.939, -16.779, 76.32]]], atol=2e-4)
    rgb = apply(PreprocessSpec((1, 1), channels="RGB"), pixel)
    bgr = apply(PreprocessSpec((1, 1), channels="BGR"), pixel)
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])


def test_inception_preset_scales_to_minus_one_one() -> None:
    pixels = np.array([[[0, 255, 51]]], np.uint8)
    out = apply(preprocess.preset("inception", size=(1, 1)), pixels)
    np.testing.assert_allclose(out, [[[-1.0, 1.0, -0.6]]], rtol=0, atol=1e-6)


def test_apply_rejects_a_non_rgb_array() -> None:
    with pytest.raises(ValueError, match=r"expected a uint8 HxWx3 image, got uint8 \(2, 4\)"):
        apply(_plain((1, 1)), IMAGE[..., 0])


def test_grayscale_file_goes_through_as_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.array([[10, 200]], np.uint8), "L").save(tmp_path / "g.png")
    record = data.ImageRecord("g.png", str(tmp_path / "g.png"))
    out = batch(_plain((1, 2)), [record])
    np.testing.assert_array_equal(np.rint(out * 255), [[[[10, 10, 10], [200, 200, 200]]]])


def test_batch_stacks_nhwc_and_decodes_each_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = []
    for i, value in enumerate((0, 255, 51)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(path)
        records.append(data.ImageRecord(path.name, str(path)))
    calls: list[str] = []

    def counting_decode(record: data.ImageRecord) -> np.ndarray:
        calls.append(record.name)
        return data.decode(record)

    monkeypatch.setattr(preprocess, "decode", counting_decode)
    out = batch(PRESETS["inception"], records)
    assert calls == ["0.png", "1.png", "2.png"]
    assert out.shape == (3, 299, 299, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0, 0], [-1.0, 1.0, -0.6], atol=1e-6)
    assert batch(PRESETS["inception"], []).shape == (0, 299, 299, 3)


# --- from_options ---------------------------------------------------------------------------


def test_from_options_starts_from_the_preset_then_overrides() -> None:
    assert from_options(None, "imagenet") is PRESETS["imagenet"]
    spec = from_options(None, "imagenet", (256, 256), None, None, "nhwc", "stretch")
    assert spec == replace(
        PRESETS["imagenet"],
        size=(256, 256),
        layout="NHWC",
        resize="stretch",
        name="imagenet+custom",
    )
    base = PRESETS["caffe"]
    spec = from_options(base, None, 299, [0.5, 0.5, 0.5], ["0.5", 0.5, 0.5])
    assert (spec.size, spec.mean, spec.std, spec.channels) == (
        (299, 299),
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        "BGR",
    )
    assert spec.name == "caffe+custom"
    # an override equal to the preset's value changes nothing
    assert from_options(None, "inception", (299, 299), layout="NHWC") is PRESETS["inception"]


def test_from_options_without_preset_or_base_needs_a_size() -> None:
    assert from_options(None, None, (32, 48)) == PreprocessSpec((32, 48), name="custom")
    with pytest.raises(ConvdiffError) as caught:
        from_options(None, None)
    assert str(caught.value) == (
        "the preprocessing needs an input size; pass --input-size H,W or --preprocess NAME"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"preset": "vgg"},
            "unknown preprocessing preset 'vgg'; use one of: imagenet, inception, caffe",
        ),
        (
            {"input_size": (224, 0)},
            "--input-size must be two positive integers H,W, got (224, 0); "
            "pass e.g. --input-size 224,224",
        ),
        (
            {"input_size": (224, 224, 3)},
            "--input-size must be two positive integers H,W, got (224, 224, 3); "
            "pass e.g. --input-size 224,224",
        ),
        (
            {"mean": (0.5, 0.5)},
            "--mean needs 3 numbers (R,G,B), got (0.5, 0.5); pass e.g. --mean 0.485,0.456,0.406",
        ),
        (
            {"mean": ("a", 0, 0)},
            "--mean needs 3 numbers (R,G,B), got ('a', 0, 0); pass e.g. --mean 0.485,0.456,0.406",
        ),
        (
            {"mean": (123.68, 116.779, 103.939)},
            "--mean 123.68,116.779,103.939 is not in units of pixel/255; "
            "divide by 255 (e.g. 123.68 -> 0.485)",
        ),
        (
            {"std": (0.2, 0.0, 0.2)},
            "--std must not contain 0; pass e.g. --std 0.229,0.224,0.225",
        ),
        (
            {"std": (0.2, float("nan"), 0.2)},
            "--std needs 3 numbers (R,G,B), got (0.2, nan, 0.2); pass e.g. --std 0.229,0.224,0.225",
        ),
        ({"layout": "NWHC"}, "unknown layout 'NWHC'; use NCHW or NHWC"),
        ({"resize": "crop"}, "unknown resize mode 'crop'; use stretch or center-crop"),
    ],
)
def test_from_options_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConvdiffError) as caught:
        from_options(PRESETS["imagenet"], **kwargs)
    assert str(caught.value) == message


@pytest.mark.parametrize("preset", ["imagenet", "inception", "caffe"])
def test_source_spec_round_trips_through_the_run_report(preset: str) -> None:
    spec = PRESETS[preset]
    as_written = json.loads(json.dumps({**spec.to_dict(), "description": spec.describe()}))
    assert PreprocessSpec.from_report(as_written) == spec
    assert PreprocessSpec.from_report({}) is None


# --- against torchvision, in a worker -------------------------------------------------------


def torchvision_imagenet_batch(paths: list[str], out: str) -> dict:
    """Child side (torch worker): torchvision's ImageNet eval transform on ``paths``, saved as
    NHWC to ``out``; also returns torchvision's class names."""
    from torchvision import transforms
    from torchvision.models import ResNet50_Weights

    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    tensors = [transform(Image.open(p).convert("RGB")).numpy() for p in paths]
    np.save(out, np.stack(tensors).transpose(0, 2, 3, 1))
    return {"categories": list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])}


def test_imagenet_preset_equals_torchvision_bit_for_bit(pool, tmp_path: Path) -> None:
    records = data.sample_set()
    outcome = pool.call(
        "torch",
        f"{__name__}:torchvision_imagenet_batch",  # this module, imported in the worker
        paths=[r.path for r in records],
        out=str(tmp_path / "tv.npy"),
    )
    assert outcome.ok, outcome.message
    reference = np.load(tmp_path / "tv.npy")
    ours = batch(PRESETS["imagenet"], records)
    assert ours.shape == reference.shape == (16, 224, 224, 3)
    np.testing.assert_array_equal(ours, reference)
    assert outcome.value["categories"] == list(data.class_names())
