"""`convdiff repair` on Keras and torch targets: faults edited into copies of tiny models are
localized under the names the frameworks use (Keras layer names, torch module paths), patched
by the appliers in the frameworks' own workers, and the repaired files load in Keras / torch
with the source's weights and settings. Patches apply again to the same bytes; the input is
never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.localize.flow import LocalizeConfig
from convdiff.commands.repair.flow import RepairConfig, RepairReport, repair
from convdiff.core.errors import ConvdiffError
from convdiff.core.progress import Progress
from convdiff.repair import apply_patch
from convdiff.repair.patch import sha256_of
from convdiff.runtime.pool import WorkerPool
from tests.helpers import ok, patch_apply_twice
from tests.tiny.repair_frameworks import KERAS_FAULTS, TORCH_FAULTS

KERAS_EDITS = {
    "conv_scaled": ["conv.weight"],
    "dense_bias_zeroed": ["dense.bias"],
    "conv_strides": ["conv.pads", "conv.strides"],
}
TORCH_EDITS = {
    "conv1_scaled": ["conv1.weight"],
    "fc_bias_zeroed": ["fc.bias"],
    "conv2_padding": ["conv2.pads"],
}


@pytest.fixture(scope="module")
def keras_source(keras_cnn: dict[str, str]) -> Path:
    return Path(keras_cnn["keras"])


def _repair(pool: WorkerPool, source: Path, target: Path, fixed: Path, work: Path) -> RepairReport:
    config = RepairConfig(
        LocalizeConfig(str(source), str(target), preprocess="imagenet"), fixed, work
    )
    return repair(config, Progress(enabled=False), pool)


def _kept(report: RepairReport) -> list[str]:
    return sorted(f"{e['layer']}.{e['field']}" for e in report.verify["kept"])


def _weights(pool: WorkerPool, kind: str, func: str, path: Path) -> tuple[dict, dict]:
    npz = path.with_name(f"{path.name}.weights.npz")
    settings = ok(
        pool.call(kind, f"tests.tiny.repair_frameworks:{func}", path=str(path), out_npz=str(npz))
    )
    with np.load(npz) as data:
        return {k: data[k] for k in data.files}, settings


def _assert_repaired(report: RepairReport, expected: list[str]) -> None:
    assert report.status == "repaired" and report.exit_code == 0, report.notes
    after = report.verify["after"]
    assert after["top1_discrepancy"] == 0.0 and after["max_abs_diff"] <= 1e-5
    assert report.verify["before"]["max_abs_diff"] > 1e-2  # the fault did show
    assert _kept(report) == expected
    assert report.verify["dropped"] == []


# per framework: worker kind, suffix, its source fixture, its faults' expected edits
FRAMEWORKS = {
    "keras": ("tf", ".keras", "keras_source", KERAS_EDITS),
    "torch": ("torch", ".pt2", "torch_source", TORCH_EDITS),
}
CASES = [("keras", f) for f in KERAS_FAULTS] + [("torch", f) for f in TORCH_FAULTS]


def _target(pool: WorkerPool, fw: str, source: Path, out: Path, fault: str) -> Path:
    kind = FRAMEWORKS[fw][0]
    made = pool.call(
        kind, f"tests.tiny.repair_frameworks:{fw}_fault", source=str(source), out=str(out),
        fault=fault,
    )  # fmt: skip
    return Path(ok(made))


@pytest.mark.parametrize(("fw", "fault"), CASES)
def test_keras_and_torch_target_faults_are_repaired(
    pool: WorkerPool, request: pytest.FixtureRequest, tmp_path: Path, fw: str, fault: str
) -> None:
    kind, suffix, source_fixture, edits = FRAMEWORKS[fw]
    source = request.getfixturevalue(source_fixture)
    target = _target(pool, fw, source, tmp_path / f"target{suffix}", fault)
    before = sha256_of(target)
    fixed = tmp_path / f"fixed{suffix}"
    report = _repair(pool, source, target, fixed, tmp_path / "work")
    _assert_repaired(report, edits[fault])
    assert sha256_of(target) == before  # the input is never overwritten
    # the repaired file loads in its framework with the source's weights and settings
    # (Keras: strides and padding of each layer; torch: conv strides and paddings)
    want, want_settings = _weights(pool, kind, f"{fw}_weights", source)
    got, got_settings = _weights(pool, kind, f"{fw}_weights", fixed)
    assert got_settings == want_settings
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-6, err_msg=key)
    # the patch applies again, to the very bytes repair wrote, under any output name
    patch = tmp_path / "work" / "patch.json"
    again = apply_patch(patch, target, tmp_path / "again" / f"other{suffix}", pool)
    assert again.out.read_bytes() == fixed.read_bytes()
    assert [f"{e.layer}.{e.field}" for e in again.applied] == [
        f"{e['layer']}.{e['field']}" for e in json.loads(patch.read_text())["edits"]
    ]


def test_patch_apply_cli_runs_its_own_workers(
    pool: WorkerPool, torch_source: Path, tmp_path: Path
) -> None:
    target = _target(pool, "torch", torch_source, tmp_path / "target.pt2", "conv1_scaled")
    _repair(pool, torch_source, target, tmp_path / "fixed.pt2", tmp_path / "work")
    patch = str(tmp_path / "work" / "patch.json")
    patch_apply_twice(patch, target, tmp_path / "fixed.pt2")
    refused = CliRunner().invoke(cli, ["patch", "apply", patch, str(target), "-o", str(target)])
    assert refused.exit_code == 2


def test_a_saved_model_target_is_still_refused(
    pool: WorkerPool, keras_source: Path, tmp_path: Path
) -> None:
    saved = ok(
        pool.call(
            "tf",
            "tests.tiny.keras_models:write_saved_model",
            keras_path=str(keras_source),
            out_dir=str(tmp_path / "saved"),
        )
    )
    with pytest.raises(ConvdiffError, match="a graph of TF ops with no layers to edit"):
        _repair(pool, keras_source, Path(saved), tmp_path / "fixed", tmp_path / "work")


def test_an_onnx2keras_model_is_named_and_repaired(
    pool: WorkerPool, rich_onnx: Path, rich_keras: str, tmp_path: Path
) -> None:
    # onnx2keras writes Lambda layers, which Keras' safe mode refuses to load: the applier
    # and the layer names once failed on every Keras model it converted
    faulty = tmp_path / "faulty.keras"
    ok(
        pool.call(
            "tf",
            "tests.tiny.keras_models:scale_kernel",
            path=rich_keras,
            layer="c2",
            factor=1.5,
            out=str(faulty),
        )  # fmt: skip
    )
    report = _repair(pool, rich_onnx, faulty, tmp_path / "fixed.keras", tmp_path / "work")
    _assert_repaired(report, ["c2.weight"])
