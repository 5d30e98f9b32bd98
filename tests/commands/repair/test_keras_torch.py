"""`convdiff repair` on Keras and torch targets: faults edited into copies of tiny models are
localized under the names the frameworks use (Keras layer names, torch module paths), patched
by the appliers in the frameworks' own workers, and the repaired files load in Keras / torch
with the source's weights and settings. Patches apply again to the same bytes; the input is
never overwritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.localize.flow import LocalizeConfig
from convdiff.commands.repair.flow import RepairConfig, RepairReport, repair
from convdiff.core.errors import ConvdiffError
from convdiff.core.progress import Progress
from convdiff.ir.names import FileOp, keras_names
from convdiff.repair import Edit, apply_edits, apply_patch, read_tensor
from convdiff.repair.patch import sha256_of
from convdiff.runtime.pool import WorkerPool
from tests.helpers import convert
from tests.tiny.ir_models import tiny_rich_cnn
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


def _value(outcome: Any) -> Any:
    assert outcome, f"{outcome.error_type}: {outcome.message}\n{outcome.traceback}"
    return outcome.value


@pytest.fixture(scope="module")
def keras_source(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keras-source")
    built = pool.call("tf", "tests.tiny.keras_models:build_tiny_cnn", out_dir=str(out))
    return Path(_value(built)["keras"])


@pytest.fixture(scope="module")
def torch_source(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torch-source") / "source.pt2"
    return Path(
        _value(pool.call("torch", "tests.tiny.repair_frameworks:torch_source", out=str(out)))
    )


def _repair(pool: WorkerPool, source: Path, target: Path, fixed: Path, work: Path) -> RepairReport:
    config = RepairConfig(
        LocalizeConfig(str(source), str(target), preprocess="imagenet"), fixed, work
    )
    return repair(config, Progress(enabled=False), pool)


def _kept(report: RepairReport) -> list[str]:
    return sorted(f"{e['layer']}.{e['field']}" for e in report.verify["kept"])


def _weights(pool: WorkerPool, kind: str, func: str, path: Path) -> tuple[dict, dict]:
    npz = path.with_name(f"{path.name}.weights.npz")
    settings = _value(
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
    return Path(_value(made))


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
    runner = CliRunner()
    patch = str(tmp_path / "work" / "patch.json")
    for name in ("a.pt2", "b.pt2"):
        result = runner.invoke(
            cli, ["patch", "apply", patch, str(target), "-o", str(tmp_path / name)]
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.pt2").read_bytes() == (tmp_path / "b.pt2").read_bytes()
    assert (tmp_path / "a.pt2").read_bytes() == (tmp_path / "fixed.pt2").read_bytes()
    refused = runner.invoke(cli, ["patch", "apply", patch, str(target), "-o", str(target)])
    assert refused.exit_code == 2


def test_read_tensor_gives_the_frameworks_own_layouts(
    pool: WorkerPool, keras_source: Path, torch_source: Path
) -> None:
    assert read_tensor("keras", keras_source, "conv", "weight", pool).shape == (3, 3, 3, 4)  # HWIO
    assert read_tensor("keras", keras_source, "dense", "weight", pool).shape == (4, 5)  # [in, out]
    assert read_tensor("keras", keras_source, "bn", "bias", pool).shape == (4,)  # beta
    assert read_tensor("keras", keras_source, "relu", "weight", pool) is None
    assert read_tensor("torch", torch_source, "conv1", "weight", pool).shape == (8, 3, 3, 3)
    assert read_tensor("torch", torch_source, "fc", "weight", pool).shape == (5, 8)
    assert read_tensor("torch", torch_source, "pool", "weight", pool) is None


def test_edits_a_framework_cannot_express_are_skipped_with_reasons(
    pool: WorkerPool, keras_source: Path, torch_source: Path, tmp_path: Path
) -> None:
    keras_edits = [
        Edit("set_attr", "conv", "pads", [0, 0, 2, 2]),
        Edit("set_attr", "conv", "strides", [2, 2]),
        Edit("remove_node", "relu"),
        Edit("set_attr", "nowhere", "epsilon", 0.1),
    ]
    result = apply_edits("keras", keras_source, keras_edits, {}, tmp_path / "k.keras", pool)
    assert [e.field for e in result.applied] == ["strides"]
    reasons = [s.reason for s in result.skipped]
    assert "neither 'same' nor 'valid'" in reasons[0]
    assert reasons[1:] == [
        "removing a layer is not written for Keras models",
        "no layer named 'nowhere' in the model",
    ]
    torch_edits = [
        Edit("set_attr", "conv2", "pads", [0, 0, 1, 1]),
        Edit("set_attr", "pool", "strides", [1, 1]),
        Edit("set_tensor", "fc", "weight", "w"),
        Edit("remove_node", "relu2"),
    ]
    tensors = {"w": np.zeros((5, 9), np.float32)}
    result = apply_edits("torch", torch_source, torch_edits, tensors, tmp_path / "t.pt2", pool)
    assert [f"{e.layer}.{e.field}" for e in result.applied] == ["pool.strides", "relu2."]
    ops = _value(
        pool.call("torch", "convdiff.repair.appliers.torch:file_ops", path=str(result.out))
    )
    assert [name for _, name, _ in ops] == ["conv1", "bn1", "relu", "pool", "conv2", "gap", "fc"]
    assert [s.reason.split(":")[0] for s in result.skipped] == [
        "torch pads both sides alike; [0, 0, 1, 1] needs an explicit F.pad",
        "fc.weight has shape [5, 8], the patch [5, 9]",
    ]
    with pytest.raises(ConvdiffError, match="refusing to overwrite"):
        apply_edits("torch", torch_source, [], {}, torch_source, pool)
    with pytest.raises(ConvdiffError, match="writes .keras files"):
        apply_edits("keras", keras_source, [], {}, tmp_path / "k.h5", pool)


def test_a_saved_model_target_is_still_refused(
    pool: WorkerPool, keras_source: Path, tmp_path: Path
) -> None:
    saved = _value(
        pool.call(
            "tf",
            "tests.tiny.keras_models:write_saved_model",
            keras_path=str(keras_source),
            out_dir=str(tmp_path / "saved"),
        )
    )
    with pytest.raises(ConvdiffError, match="a graph of TF ops with no layers to edit"):
        _repair(pool, keras_source, Path(saved), tmp_path / "fixed", tmp_path / "work")


def test_keras_names_map_conversion_ops_onto_layers() -> None:
    classes = {
        "image": "InputLayer",
        "conv": "Conv2D",
        "conv_1": "Conv2D",
        "bn": "BatchNormalization",
    }
    classes |= {"relu": "ReLU", "dense": "Dense", "softmax": "Softmax"}
    ops = [
        FileOp(*op)
        for op in (
            # TFLite fuses BN and ReLU into the conv: the op's name holds all three scopes
            ("conv2d", "m_1/relu_1/Relu;m_1/bn_1/batchnorm/add_1;m_1/conv_1/convolution", 0),
            # the second conv, "conv_1", under TF's "_1" suffix: its scope is conv_1_1
            ("conv2d", "m_1/conv_1_1/convolution;m_1/conv_1_1/BiasAdd", 1),
            ("dense", "m_1/dense_1/MatMul;m_1/dense_1/BiasAdd", 2),
            ("softmax", "StatefulPartitionedCall_1:0", 3),
            ("relu", "StatefulPartitionedCall/m_1/relu_1/Relu", 4),
        )
    ]
    assert keras_names(ops, classes) == {
        ops[0][1]: "conv",
        ops[1][1]: "conv_1",
        ops[2][1]: "dense",
        ops[4][1]: "relu",
    }


def test_an_onnx2keras_model_is_named_and_repaired(pool: WorkerPool, tmp_path: Path) -> None:
    # onnx2keras writes Lambda layers, which Keras' safe mode refuses to load: the applier
    # and the layer names once failed on every Keras model it converted
    source = tiny_rich_cnn(tmp_path / "rich.onnx")
    keras = convert(pool, "onnx", "keras", source, tmp_path / "k")
    faulty = tmp_path / "faulty.keras"
    _value(
        pool.call(
            "tf",
            "tests.tiny.keras_models:scale_kernel",
            path=keras,
            layer="c2",
            factor=1.5,
            out=str(faulty),
        )  # fmt: skip
    )
    report = _repair(pool, source, faulty, tmp_path / "fixed.keras", tmp_path / "work")
    _assert_repaired(report, ["c2.weight"])
