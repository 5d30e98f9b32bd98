"""Files convdiff must not get wrong or destroy: a cache that cannot serve a changed file, run
folders whose artifacts are copies, folders emptied only when convdiff made them, a report.json
that is always this run's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.core.cache import ArtifactCache, copy_artifact
from convdiff.core.errors import ConvdiffError, OutputDirError
from convdiff.core.outdir import (
    MARKER,
    keep_own_dir,
    own_dir,
    prepare_out_dir,
    remove_own_dir,
)
from tests.tiny.onnx_models import tiny_classifier


@pytest.fixture
def stored(tmp_path: Path) -> tuple[ArtifactCache, Path]:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights" * 100)
    cache = ArtifactCache(tmp_path / "cache")
    cache.store("k", model, {"seconds": 1.0})
    return cache, tmp_path / "cache" / "k" / "model.onnx"


def test_a_cached_file_is_served_while_it_is_what_was_stored(stored) -> None:
    cache, cached = stored
    path, meta = cache.lookup("k")
    assert (path, meta["seconds"], cache.notes) == (cached, 1.0, [])
    os.utime(cached, ns=(1, 1))  # touched, same bytes: the digest says it is unchanged
    assert cache.lookup("k")[0] == cached and cache.notes == []


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda f: f.write_bytes(b"WEIGHTS" * 100), "model.onnx changed after it was stored"),
        (lambda f: f.write_bytes(b"weights" * 50), "model.onnx changed after it was stored"),
        (lambda f: f.unlink(), "its files are missing or others were added"),
        (
            lambda f: (f.parent / "entry.json").write_text("{not json"),
            "its entry.json is unreadable or from an older convdiff (JSONDecodeError)",
        ),
    ],
)
def test_a_changed_entry_is_dropped_with_a_note(stored, damage, why: str) -> None:
    cache, cached = stored
    damage(cached)
    assert cache.lookup("k") is None
    assert cache.notes == [f"cache: dropped the bad entry k ({why}); made it again"]
    assert not cached.parent.exists()  # rebuilt by the next store


def test_run_folder_copies_are_not_links(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"1234")
    copy_artifact(source, tmp_path / "b.bin")
    (tmp_path / "b.bin").write_bytes(b"9999")  # what `cp x b.bin` does: writes in place
    assert source.read_bytes() == b"1234"
    assert os.stat(source).st_ino != os.stat(tmp_path / "b.bin").st_ino


def test_a_cache_folder_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConvdiffError, match=r"cannot use the cache folder .*/file: File exists"):
        ArtifactCache(tmp_path / "file").check_writable()


def test_only_folders_convdiff_made_are_emptied(tmp_path: Path) -> None:
    mine = own_dir(tmp_path / "mine")
    (mine / "old.onnx").write_text("x")
    assert sorted(p.name for p in own_dir(mine).iterdir()) == [MARKER]  # emptied again
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "model.onnx").write_text("keep me")
    with pytest.raises(OutputDirError, match="holds files convdiff did not write"):
        own_dir(theirs)
    remove_own_dir(theirs)
    assert (theirs / "model.onnx").read_text() == "keep me"


def test_a_folder_kept_for_resuming_is_made_or_kept_never_taken(tmp_path: Path) -> None:
    made = keep_own_dir(tmp_path / "cell")
    assert sorted(p.name for p in made.iterdir()) == [MARKER]
    (made / "outputs").mkdir()
    assert (keep_own_dir(made) / "outputs").is_dir()  # what an interrupted run left stays
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    with pytest.raises(OutputDirError, match="holds files convdiff did not write"):
        keep_own_dir(theirs)


def test_a_report_json_convdiff_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text('{"mine": 1}')
    with pytest.raises(OutputDirError, match="is not a report convdiff wrote"):
        prepare_out_dir(tmp_path, "x")
    (tmp_path / "report.json").write_text('{"schema_version": 1, "convdiff_version": "0.1.0"}')
    prepare_out_dir(tmp_path, "x")
    assert not (tmp_path / "report.json").exists()


@pytest.mark.workers
def test_a_refused_run_leaves_its_own_report_not_the_last_one(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    out = tmp_path / "run"
    args = ["run", str(model), "--dst", "torch", "--out", str(out), "--quiet", "--limit", "2"]
    assert CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "c")]).exit_code == 0
    assert json.loads((out / "report.json").read_text())["status"] == "ok"
    result = CliRunner().invoke(cli, [*args, "--data", str(tmp_path / "nowhere")])
    report = json.loads((out / "report.json").read_text())
    assert (result.exit_code, report["status"]) == (2, "error")
    assert result.stderr == f"error: {report['error']}\n"
    assert "nowhere" in report["error"]


@pytest.mark.workers
def test_a_run_never_deletes_a_folder_the_user_keeps_in_its_out(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    kept = tmp_path / "run" / "artifacts" / "1-torch"
    kept.mkdir(parents=True)
    (kept / "my_model.pt2").write_text("keep me")
    result = CliRunner().invoke(
        cli, ["run", str(model), "--dst", "torch", "--out", str(tmp_path / "run"), "--quiet"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {kept} holds files convdiff did not write, and a run needs that folder; "
        "pass --out with another folder, or move those files\n"
    )
    assert (kept / "my_model.pt2").read_text() == "keep me"
