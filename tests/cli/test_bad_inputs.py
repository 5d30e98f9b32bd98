"""Bad input, as a hostile or careless user gives it: each gets one line naming the problem and
the fix, and its exit code (2 bad usage or input), never a traceback, never exit 4.

The first group fails before any worker starts (checked up front); the second needs the model
loaded (workers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper

from convdiff.cli import cli
from convdiff.repair.patch import Edit, Patch
from tests.tiny.onnx_models import save_graph, tiny_classifier


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--quiet"] if args[0] != "patch" else list(args))
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stderr


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_classifier(tmp_path / "tiny.onnx")


ZOO = ["run", "mobilenetv2", "--src", "keras", "--dst", "tflite"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--max-discrepancy", "nan"],
            "--max-discrepancy must be a percentage from 0 to 100, got nan; "
            "pass e.g. --max-discrepancy 0",
        ),
        (
            ["--timeout", "nan"],
            "--timeout must be a positive number of seconds, got nan; pass e.g. --timeout 1800",
        ),
        (
            ["--timeout", "-5"],
            "--timeout must be a positive number of seconds, got -5.0; pass e.g. --timeout 1800",
        ),  # fmt: skip
        (["--seed", "-1"], "--seed must be from 0 to 4294967295, got -1; pass e.g. --seed 0"),
        (
            ["--mean", "0.5,0.5,0.5"],
            "--mean applies to a model file; the zoo's mobilenetv2 brings its own "
            "preprocessing; drop --mean",
        ),
        (
            ["--labels", "val.txt"],
            "--labels needs --data: the embedded sample set has labels of its own; pass --data "
            "DIR with --labels, or drop --labels",
        ),
    ],
)
def test_zoo_run_options_checked_before_any_work(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    code, stderr = invoke(*ZOO, *extra, "--out", str(tmp_path / "r"))
    assert (code, stderr) == (2, f"error: {message}\n")
    assert not (tmp_path / "r" / "logs").exists()  # no worker was started


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--std", "-1,1,1"],
            "--std needs 3 positive numbers (R,G,B in units of pixel/255), got -1.0,1.0,1.0; "
            "pass e.g. --std 0.229,0.224,0.225",
        ),
        (
            ["--input-size", "100000,100000"],
            "--input-size must be two integers from 1 to 4096, got 100000,100000; pass the "
            "model's own input size, e.g. --input-size 224,224",
        ),
        (
            ["--weights", "random"],
            "--weights applies to zoo models; tiny.onnx brings its own weights; drop --weights",
        ),
    ],
)
def test_file_run_options_checked_before_any_work(
    tmp_path: Path, tiny: Path, extra: list[str], message: str
) -> None:
    code, stderr = invoke("run", str(tiny), "--dst", "torch", *extra, "--out", str(tmp_path / "r"))
    assert (code, stderr) == (2, f"error: {message}\n")


def test_an_opset_the_exporter_does_not_write_is_refused(tmp_path: Path) -> None:
    code, stderr = invoke(
        "run", "efficientnet_lite0", "--src", "torch", "--dst", "onnx", "--opset", "7",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert (code, stderr) == (
        2,
        "error: --opset 7 is below what torch's dynamo exporter writes (18 or later): the file "
        "would say another opset than the report; pass --opset 18 or later, or "
        "--torch-exporter torchscript\n",
    )


def test_a_labels_file_that_is_not_utf8(tmp_path: Path, tiny: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    (tmp_path / "val.txt").write_bytes(b"a.png 1\n\xff\xfe\n")
    code, stderr = invoke(
        "run", str(tiny), "--dst", "torch", "--data", str(images), "--labels",
        str(tmp_path / "val.txt"), "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert (code, stderr) == (
        2,
        f"error: labels file {tmp_path / 'val.txt'} is not UTF-8 text (invalid start byte at "
        "byte 8); save it as UTF-8 text\n",
    )


def test_a_cache_folder_that_is_a_file(tmp_path: Path, tiny: Path) -> None:
    (tmp_path / "cache").write_text("not a folder")
    code, stderr = invoke(
        "run", str(tiny), "--dst", "torch", "--cache-dir", str(tmp_path / "cache"),
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert (code, stderr) == (
        2,
        f"error: cannot use the cache folder {tmp_path / 'cache'}: File exists; pass "
        "--cache-dir with a folder you can write, or --no-cache\n",
    )


def test_repair_never_writes_over_its_source(tmp_path: Path, tiny: Path) -> None:
    target = tiny_classifier(tmp_path / "target.onnx", seed=1)
    code, stderr = invoke("repair", str(tiny), str(target), "-o", str(tiny))
    assert (code, stderr) == (
        2,
        f"error: refusing to overwrite the input model {tiny}; give another output path for "
        "the patched model\n",
    )


def _patch(tmp_path: Path, target: Path) -> Path:
    from convdiff.repair.patch import sha256_of

    patch = Patch(
        target={"name": target.name, "format": "onnx", "sha256": sha256_of(target)},
        source={"name": "s.onnx", "sha256": "0" * 64},
        edits=[Edit("set_tensor", "c", "weight", value="w0", stage="weights")],
    )
    patch.tensors = {"w0": np.zeros((8, 3, 3, 3), np.float32)}
    return patch.save(tmp_path / "patch.json")


CORRUPT_PATCHES = {
    "not JSON": (lambda j, n: j.write_text("{"), "is not JSON"),
    "a list": (lambda j, n: j.write_text("[]"), "holds no JSON object"),
    "edits not a list": (
        lambda j, n: j.write_text(json.dumps({**json.loads(j.read_text()), "edits": 3})),
        "is malformed (TypeError",
    ),
    "an edit without fields": (
        lambda j, n: j.write_text(
            json.dumps({**json.loads(j.read_text()), "edits": [{"action": "set_tensor"}]})
        ),
        "is malformed (TypeError",
    ),
    "target not an object": (
        lambda j, n: j.write_text(json.dumps({**json.loads(j.read_text()), "target": "m.onnx"})),
        "is malformed (AttributeError",
    ),
    "an empty npz": (lambda j, n: n.write_bytes(b""), "is not a readable .npz (EOFError"),
    "an npz that is not a zip": (
        lambda j, n: n.write_bytes(b"PK\x03\x04 broken"),
        "is not a readable .npz",
    ),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_PATCHES))
@pytest.mark.parametrize("command", ["show", "apply"])
def test_corrupt_patches(tmp_path: Path, tiny: Path, kind: str, command: str) -> None:
    patch = _patch(tmp_path, tiny)
    damage, message = CORRUPT_PATCHES[kind]
    damage(patch, patch.with_suffix(".npz"))
    args = ["patch", command, str(patch)]
    if command == "apply":
        args += [str(tiny), "-o", str(tmp_path / "out.onnx")]
    code, stderr = invoke(*args)
    assert code == 2
    assert stderr.startswith("error: patch ") and message in stderr, stderr
    assert stderr.count("\n") == 1


def test_patch_apply_to_a_folder_or_another_format(tmp_path: Path, tiny: Path) -> None:
    patch = _patch(tmp_path, tiny)
    code, stderr = invoke("patch", "apply", str(patch), str(tiny), "-o", str(tmp_path))
    assert (code, stderr) == (
        2,
        f"error: the output {tmp_path} is a folder; give a file path for the patched model, "
        f"e.g. {tmp_path / 'patched.onnx'}\n",
    )
    code, stderr = invoke("patch", "apply", str(patch), str(tiny), "-o", str(tmp_path / "x.tflite"))
    assert (code, stderr) == (
        2,
        "error: the output x.tflite does not have the target's suffix .onnx; name the repaired "
        "model *.onnx: it is written in the target's format\n",
    )


def _feature_map(path: Path) -> Path:
    """A model whose output is a [1,3,7,7] feature map, not class scores."""
    nodes = [helper.make_node("Relu", ["input"], ["y"])]
    return save_graph(path, nodes, "fmap", [1, 3, 7, 7], "y", [1, 3, 7, 7], {})


def _two_inputs(path: Path) -> Path:
    import onnx
    from onnx import TensorProto

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 8, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.workers
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            _feature_map,
            "model.onnx's output has shape [1, 3, 7, 7], not one score vector per image; "
            "convdiff compares image classifiers: give the model whose output is the class "
            "scores",
        ),
        (
            _two_inputs,
            "model.onnx takes 2 inputs; convdiff compares image classifiers with one image input",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "localize"])
def test_models_that_are_not_classifiers_are_refused(
    tmp_path: Path, build, message: str, command: str
) -> None:
    model = build(tmp_path / "model.onnx")
    args = [command, str(model)] + (["--dst", "torch"] if command == "run" else [str(model)])
    code, stderr = invoke(*args, "--out", str(tmp_path / "o"))
    assert (code, stderr) == (2, f"error: {message}\n")


def _other_classifier(path: Path) -> Path:
    """The interface of tiny_classifier (3x16x16 -> 10 classes), another network inside."""
    rng = np.random.default_rng(5)
    weights = {
        "w": rng.normal(0, 0.5, (5, 3, 3, 3)).astype(np.float32),
        "fc": rng.normal(0, 1.0, (10, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["probs"], transB=1),
    ]
    return save_graph(path, nodes, "other", [1, 3, 16, 16], "probs", [1, 10], weights)


@pytest.mark.workers
def test_localize_refuses_two_unrelated_models(tmp_path: Path, tiny: Path) -> None:
    other = _other_classifier(tmp_path / "other.onnx")
    args = ["localize", str(tiny), str(other), "--stages", "weights,hyperparams,graph"]
    code, stderr = invoke(*args, "--out", str(tmp_path / "o"))
    assert (code, stderr) == (
        2,
        "error: other.onnx is not a conversion of tiny.onnx: 0 of the 2 weighted layers of "
        "tiny.onnx have a counterpart of the same size in other.onnx; localize compares a "
        "model with its conversion: give the model it was converted from\n",
    )


@pytest.mark.workers
def test_a_torchscript_file_takes_its_shape_from_input_size(pool, tmp_path: Path) -> None:
    saved = pool.call("torch", "tests.tiny.torch_models:make_tiny", out_dir=str(tmp_path), fmt="pt")
    assert saved, saved.message
    args = ["run", saved.value["path"], "--dst", "onnx", "--torch-exporter", "torchscript"]
    code, stderr = invoke(*args, "--out", str(tmp_path / "a"))
    assert (code, stderr) == (
        2,
        "error: the model's input shape is unknown (a TorchScript file keeps none); pass "
        "--input-size H,W (and --layout nhwc if it takes NHWC images)\n",
    )
    code, stderr = invoke(*args, "--input-size", "16,16", "--out", str(tmp_path / "b"))
    assert (code, stderr) == (0, "")
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["source"]["input_shape"] == [None, 3, 16, 16]


@pytest.mark.workers
def test_a_dynamic_onnx_model_converts_at_the_input_size(tmp_path: Path, tiny: Path) -> None:
    import onnx

    model = onnx.load(str(tiny))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((0, "N"), (2, "H"), (3, "W")):
        dims[i].dim_param = name
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    code, stderr = invoke(
        "run", str(tmp_path / "dynamic.onnx"), "--dst", "torch", "--input-size", "16,16",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert (code, stderr) == (0, "")


@pytest.mark.workers
def test_a_load_that_times_out_says_so(tmp_path: Path, tiny: Path) -> None:
    code, stderr = invoke(
        "run", str(tiny), "--dst", "torch", "--timeout", "0.01", "--out", str(tmp_path / "r")
    )
    assert (code, stderr) == (
        2,
        "error: loading tiny.onnx in ONNX (onnxruntime) took longer than the timeout "
        "(0.01 s); pass a larger --timeout\n",
    )


@pytest.mark.workers
def test_patch_apply_refuses_a_model_that_does_not_run(tmp_path: Path, tiny: Path) -> None:
    """A weight of another input width: onnxruntime loads the file and fails when it runs."""
    patch = _patch(tmp_path, tiny)
    np.savez(patch.with_suffix(".npz"), w0=np.zeros((8, 5, 3, 3), np.float32))
    code, stderr = invoke("patch", "apply", str(patch), str(tiny), "-o", str(tmp_path / "o.onnx"))
    assert code == 2
    assert stderr.startswith("error: the patched model o.onnx does not run in its runtime (")
    assert "Input channels C is not equal to kernel channels * group" in stderr
    assert stderr.endswith("); the patch does not fit this model: plan a new one with convdiff "
                           "repair\n")  # fmt: skip
    assert not (tmp_path / "o.onnx").exists()
