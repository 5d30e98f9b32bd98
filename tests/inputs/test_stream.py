"""The image stream: batches in order, from any batch on, each image decoded once per spec,
and no batch file left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convdiff.inputs import preprocess
from convdiff.inputs.data import ImageRecord
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.inputs.stream import ImageStream, batch_count

SPECS = {
    "source": PreprocessSpec(size=(8, 8)),
    "target": PreprocessSpec(size=(6, 6), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
}


def _images(folder: Path, count: int) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        size = (10 + i, 12 + 2 * i)  # varied sizes, as a real folder has
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(path.name, str(path)))
    return records


@pytest.mark.parametrize("threads", [0, 2])
def test_batches_hold_every_image_once_in_order(tmp_path: Path, threads: int) -> None:
    records = _images(tmp_path, 7)
    seen = []
    with ImageStream(records, SPECS, tmp_path / "s", 3, threads=threads) as stream:
        assert stream.batches == 3
        for batch in stream:
            for name, spec in SPECS.items():
                with np.load(batch.files[name]) as data:
                    expected = preprocess.batch(spec, records[batch.start : batch.stop])
                    np.testing.assert_array_equal(data["x"], expected)
            seen.append((batch.index, batch.start, batch.count))
            batch.remove()
    assert seen == [(0, 0, 3), (1, 3, 3), (2, 6, 1)]
    assert list((tmp_path / "s").iterdir()) == []


def test_a_stream_starts_at_the_batch_it_is_told(tmp_path: Path) -> None:
    records = _images(tmp_path, 7)
    with ImageStream(records, {"source": SPECS["source"]}, tmp_path / "s", 2, 2, 0) as stream:
        assert [(b.index, b.start, b.count) for b in stream] == [(2, 4, 2), (3, 6, 1)]


def test_leaving_early_removes_the_batches_decoded_ahead(tmp_path: Path) -> None:
    records = _images(tmp_path, 9)
    with ImageStream(records, SPECS, tmp_path / "s", 1, threads=2) as stream:
        first = next(iter(stream))
        assert first.files["source"].exists()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == []


def test_an_undecodable_image_is_the_users_error(tmp_path: Path) -> None:
    from convdiff.core.errors import DataError

    records = _images(tmp_path, 2)
    Path(records[1].path).write_bytes(b"not an image")
    with (
        pytest.raises(DataError, match="cannot decode image"),
        ImageStream(records, SPECS, tmp_path / "s", 1, threads=0) as stream,
    ):
        list(stream)


def test_batch_count() -> None:
    assert [batch_count(n, 64) for n in (0, 1, 64, 65, 50_000)] == [0, 1, 1, 2, 782]
