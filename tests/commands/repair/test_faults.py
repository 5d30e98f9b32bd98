"""`convdiff repair` end to end on every injected fault of the localization tests.

Each fault of :data:`tests.tiny.faults.FAULTS` is edited into a copy of the tiny ONNX model;
repair must localize it, write a patch naming the faulty node, keep the patch through the
verify loop, and write a model that matches the source: 0% top-1 discrepancy, outputs equal
at float level, and every node's attributes and weights equal to the source model's (so a
fault that does not show on the sample images is repaired too).

Four faults change nothing the tiny model computes at its input size (16x16: the extra pad
row of a 2x2/2 max pool is never read, ceil mode rounds nothing): the function check proves
their segments equal, localize reports them as latent, and repair leaves the file alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from convdiff.cli import cli
from convdiff.commands.localize.flow import LocalizeConfig
from convdiff.commands.repair.flow import RepairConfig, repair
from convdiff.core.progress import Progress
from convdiff.runtime.pool import WorkerPool
from tests.helpers import patch_apply_twice
from tests.tiny.faults import FAULTS, inject

# the edit(s) each fault needs: "<node>.<field>"
EDITS = {
    "lost_conv_pads": ["conv2.pads"],
    "asymmetric_same_pads": ["conv1.pads"],
    "maxpool_pads": ["pool1.pads"],
    "maxpool_ceil_mode": ["pool1.ceil_mode"],
    "avgpool_count_include_pad": ["avgpool.count_include_pad"],
    "avgpool_ceil_mode": ["avgpool.ceil_mode"],
    "bn_epsilon": ["bn1.epsilon"],
    "relu6_bounds": ["relu6.clip_max"],
    "weights_int8": ["conv2.weight"],
    "weights_float16": ["fc.weight"],
    "transposed_weights": ["conv2.weight"],
    "zeroed_bias": ["conv2.bias"],
    "dropped_bias": ["conv2.bias"],
    "scaled_weights": ["fc.weight"],
    "extra_class": ["fc.bias", "fc.weight"],
    "softmax_axis": ["softmax.axis"],
    "maxpool_zero_pad": ["pool1_pad"],
    "dropped_activation": ["conv2.relu"],
    "swapped_layers": ["avgpool.after"],
}


DEFAULTS = {"ceil_mode": 0, "count_include_pad": 0, "auto_pad": b"NOTSET"}


def _attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes, those at their ONNX default left out (all-zero pads too)."""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {
        k: v
        for k, v in values.items()
        if DEFAULTS.get(k, object()) != v and not (k == "pads" and not any(v))
    }


def _node_values(path: Path) -> dict[str, tuple[str, dict, list[np.ndarray]]]:
    """Per node: op type, attributes, and the values of its constant inputs."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    return {
        n.name: (
            n.op_type,
            _attrs(n),
            [inits[i] for i in n.input if i in inits],
        )
        for n in model.graph.node
    }


def _edit_name(edit: dict) -> str:
    """``node.field``, or the node alone for an edit of the whole node (remove_node)."""
    return f"{edit['layer']}.{edit['field']}" if edit["field"] else edit["layer"]


# faults the model's function does not show at its input size -> the latent finding, if any
LATENT = {
    "maxpool_pads": ("hyperparams", "asymmetric_pads"),
    "maxpool_ceil_mode": ("hyperparams", "ceil_mode"),
    "avgpool_ceil_mode": ("hyperparams", "ceil_mode"),
    "maxpool_zero_pad": None,  # an extra layer in a segment that agrees: alignment, not a fault
}


def test_every_fault_has_its_expected_edits() -> None:
    assert sorted(EDITS) == sorted(FAULTS)


@pytest.mark.parametrize("fault", list(LATENT))
def test_a_fault_the_function_does_not_show_is_latent_and_left_alone(
    pool: WorkerPool, base: Path, tmp_path: Path, fault: str
) -> None:
    target = inject(base, fault, tmp_path / f"{fault}.onnx")
    config = RepairConfig(
        LocalizeConfig(str(base), str(target), preprocess="imagenet"),
        tmp_path / "fixed.onnx",
        tmp_path / "work",
    )
    report = repair(config, Progress(enabled=False), pool)
    assert (report.status, report.exit_code) == ("nothing_to_repair", 0)
    assert not (tmp_path / "fixed.onnx").exists()
    found = json.loads((tmp_path / "work" / "localize" / "report.json").read_text())["findings"]
    layered = [(f["stage"], f["kind"]) for f in found if f["stage"] not in ("inputs", "tools")]
    assert layered == ([] if LATENT[fault] is None else [LATENT[fault]])
    assert all(f["evidence"]["latent"] for f in found if f["stage"] == "hyperparams")


@pytest.mark.parametrize("fault", [f for f in FAULTS if f not in LATENT])
def test_each_injected_fault_is_repaired(
    pool: WorkerPool, base: Path, tmp_path: Path, fault: str
) -> None:
    target = inject(base, fault, tmp_path / f"{fault}.onnx")
    fixed = tmp_path / "fixed.onnx"
    config = RepairConfig(
        LocalizeConfig(str(base), str(target), preprocess="imagenet"), fixed, tmp_path / "work"
    )
    report = repair(config, Progress(enabled=False), pool)
    assert report.status == "repaired" and report.exit_code == 0
    after = report.verify["after"]
    assert after["top1_discrepancy"] == 0.0 and after["max_abs_diff"] <= 1e-6
    kept = [_edit_name(e) for e in report.verify["kept"]]
    assert sorted(kept) == EDITS[fault]
    assert report.verify["dropped"] == []
    # the repaired file is the source model again, node by node
    want, got = _node_values(base), _node_values(fixed)
    assert sorted(got) == sorted(want)
    for name, (op, attrs, values) in want.items():
        assert got[name][0] == op
        assert got[name][1] == attrs, name
        assert len(got[name][2]) == len(values), name
        for a, b in zip(got[name][2], values, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
    # the patch on disk is the one verified, and applies again to the same bytes
    written = json.loads((tmp_path / "work" / "patch.json").read_text())
    assert sorted(_edit_name(e) for e in written["edits"]) == EDITS[fault]
    repaired = json.loads((tmp_path / "work" / "repair.json").read_text())
    assert repaired["status"] == "repaired"
    assert repaired["passes"]["native"] == 2 + len(repaired["verify"]["steps"])


@pytest.mark.workers
def test_cli_repair_and_patch_apply(base: Path, tmp_path: Path) -> None:
    target = inject(base, "lost_conv_pads", tmp_path / "faulty.onnx")
    runner = CliRunner()
    work = tmp_path / "work"
    result = runner.invoke(
        cli,
        ["repair", str(base), str(target), "-o", str(tmp_path / "fixed.onnx")]
        + ["--out", str(work), "--preprocess", "imagenet", "--limit", "4", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "convdiff repair faulty.onnx against base.onnx: repaired" in result.output
    assert "  conv2.pads: [0,0,0,0] -> [1,1,1,1]\n" in result.output
    patch = str(work / "patch.json")
    patch_apply_twice(patch, target, tmp_path / "fixed.onnx")
    shown = runner.invoke(cli, ["patch", "show", patch])
    assert shown.output.splitlines()[:2] == [
        "patch for faulty.onnx (onnx), planned against base.onnx: 1 edit(s)",
        "conv2.pads: [0,0,0,0] -> [1,1,1,1]",
    ]
    other = runner.invoke(cli, ["patch", "apply", patch, str(base), "-o", str(tmp_path / "x.onnx")])
    assert other.exit_code == 2
    assert other.output.startswith("error: the patch was written for faulty.onnx (sha256 ")
    again = runner.invoke(cli, ["repair", str(base), str(target), "-o", str(target)])
    assert again.exit_code == 2
    assert "refusing to overwrite the input model" in again.output
    assert not (tmp_path / "x.onnx").exists()


def test_repair_refuses_what_it_cannot_write(base: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    wrong_suffix = runner.invoke(
        cli, ["repair", str(base), str(base), "-o", str(tmp_path / "x.tflite")]
    )
    assert wrong_suffix.exit_code == 2
    assert wrong_suffix.output == (
        "error: the output x.tflite does not have the target's suffix .onnx; name the repaired "
        "model *.onnx: it is written in the target's format\n"
    )
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")  # the check is by format, before any loading
    refused = runner.invoke(cli, ["repair", str(base), str(saved), "-o", str(tmp_path / "y")])
    assert refused.exit_code == 2
    assert refused.output == (
        "error: repair writes onnx, tflite, keras and torch models; saved is a TensorFlow "
        "SavedModel model, a graph of TF ops with no layers to edit; repair the Keras model it "
        "was exported from, or the onnx/tflite hop of its chain\n"
    )
    assert not (tmp_path / "x.tflite").exists() and not (tmp_path / "y").exists()
