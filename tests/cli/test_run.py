"""The command line through click's CliRunner: exit codes, one-line errors, real runs.

The end-to-end cases use tiny ONNX models written in the test (no framework in this process)
and the first four sample images; conversions and inference run in real workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the CLI; ``run`` gets --quiet so that stderr holds nothing but errors."""
    argv = [*args, "--quiet"] if args and args[0] == "run" and "--quiet" not in args else list(args)
    result = CliRunner().invoke(cli, argv)
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "nosuchnet", "--dst", "tflite"],
            "error: unknown model 'nosuchnet'; use a zoo name (mobilenetv2, resnet101, "
            "inceptionv3, convnext_tiny, efficientnetv2_b0, efficientnet_lite0, "
            "timm:<any timm model>) or a path to a model file",
        ),
        (
            ["run", "mobilenetv2", "--src", "keras", "--dst", "caffe"],
            "error: Invalid value for '--dst': 'caffe' is not one of 'keras', 'tf', 'tflite', "
            "'onnx', 'torch'. (see convdiff run --help)",
        ),
        (
            ["run", "mobilenetv2", "--src", "keras", "--dst", "keras"],
            "error: source and target are both keras; choose a different --dst",
        ),
        (
            ["run", "mobilenetv2", "--src", "keras", "--dst", "torch", "--via", "caffe"],
            "error: unknown framework 'caffe'; use one of: keras, tf, tflite, onnx, torch",
        ),
        (
            ["run", "mobilenetv2", "--dst", "tflite"],
            "error: --src is needed with the zoo model mobilenetv2; add --src with one of: "
            "keras, tf, torch",
        ),
        (
            ["run", "efficientnet_lite0", "--src", "keras", "--dst", "tflite"],
            "error: zoo model efficientnet_lite0 is not offered for framework 'keras'; "
            "use --src torch",
        ),
        (
            ["run", "missing/model.onnx", "--dst", "torch"],
            "error: model file missing/model.onnx does not exist; check the path",
        ),
        (
            ["run", "mobilenetv2", "--src", "keras", "--dst", "tflite", "--input-size", "224"],
            "error: Invalid value for '--input-size': '224' is not 2 comma-separated numbers "
            "(e.g. 299,299) (see convdiff run --help)",
        ),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, stdout, stderr = invoke(*args)
    assert code == 2
    assert one_error_line(stderr) == message
    assert stdout == ""


def test_empty_image_folder(tmp_path: Path, tiny_onnx: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, stderr = invoke(
        "run", str(tiny_onnx), "--dst", "torch", "--data", str(tmp_path / "empty")
    )
    assert code == 2
    assert one_error_line(stderr).startswith(f"error: image folder {tmp_path / 'empty'} is empty")


def test_folder_without_images(tmp_path: Path, tiny_onnx: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"garbage, not a jpeg")
    code, _, stderr = invoke("run", str(tiny_onnx), "--dst", "torch", "--data", str(folder))
    assert code == 2
    line = one_error_line(stderr)
    assert line.startswith(f"error: no readable image in {folder}")


def test_unwritable_output_folder(tmp_path: Path, tiny_onnx: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, stderr = invoke("run", str(tiny_onnx), "--dst", "torch", "--out", str(blocker / "run"))
    assert code == 2
    assert one_error_line(stderr) == (
        f"error: cannot write the output folder {blocker / 'run'}: Not a directory; "
        "pass --out with a folder you can write"
    )


@pytest.mark.workers
def test_corrupt_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf model")
    code, _, stderr = invoke("run", str(bad), "--dst", "torch", "--out", str(tmp_path / "run"))
    assert code == 2
    line = one_error_line(stderr)
    assert line.startswith("error: cannot load bad.onnx as a ONNX (onnxruntime) model: ")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["partial"] is True
    assert report["status"] == "error"  # this run's own verdict, with the user's message
    assert f"error: {report['error']}" == line


@pytest.mark.workers
def test_input_size_that_does_not_fit(tmp_path: Path, tiny_onnx: Path) -> None:
    code, _, stderr = invoke(
        "run", str(tiny_onnx), "--dst", "torch", "--input-size", "32,32", "--out", str(tmp_path)
    )
    assert code == 2
    assert one_error_line(stderr) == (
        "error: the model takes 16x16 images but --input-size says 32x32; "
        "drop --input-size or pass --input-size 16,16"
    )


@pytest.mark.workers
def test_real_run_onnx_to_torch_agrees_and_is_cached(tmp_path: Path, tiny_onnx: Path) -> None:
    common = ["--limit", "4", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    code, stdout, _ = invoke(
        "run", str(tiny_onnx), "--dst", "torch", "--out", str(tmp_path / "a"), *common
    )
    assert code == 0, stdout
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["schema_version"] == 1
    assert (report["model"], report["src"], report["dst"]) == ("tiny", "onnx", "torch")
    assert (report["status"], report["partial"], report["images"]) == ("ok", False, 4)
    assert report["top1_discrepancy"] == 0.0 and report["top5_discrepancy"] == 0.0
    assert report["max_abs_diff"] < 1e-5
    assert report["crashes"] == []
    (hop,) = report["chain"]
    assert (hop["tool"], hop["version"].split(",")[0]) == ("onnx2torch", "onnx2torch 1.5.15")
    assert hop["artifact"]["cached"] is False
    assert Path(hop["artifact"]["path"]).exists()
    assert hop["agreement"]["images"] == 4
    assert "OK: source and target agree" in stdout
    assert (
        (tmp_path / "a" / "report.md").read_text().startswith("# convdiff run: tiny, onnx -> torch")
    )

    code, _, _ = invoke(
        "run", str(tiny_onnx), "--dst", "torch", "--out", str(tmp_path / "b"), *common
    )
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert code == 0
    assert again["chain"][0]["artifact"]["cached"] is True
    assert again["max_abs_diff"] == report["max_abs_diff"]


@pytest.mark.workers
def test_converter_crash_is_a_finding_with_exit_3(reduce18_onnx: Path, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(
        "run",
        str(reduce18_onnx),
        "--dst",
        "torch",
        "--limit",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--no-cache",
        "--quiet",
    )
    assert code == 3
    assert "Traceback" not in stdout + stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["status"], report["partial"]) == ("crash", True)
    (crash,) = report["crashes"]
    assert (crash["stage"], crash["tool"], crash["hop"], crash["failure"]) == (
        "convert",
        "onnx2torch",
        1,
        "exception",
    )
    assert crash["version"].startswith("onnx2torch 1.5.15")
    assert "ReduceMean" in crash["message"] and "version=18" in crash["message"]
    assert crash["hint"] == (
        "the ONNX file uses an opset-18+ version of this op, which onnx2torch 1.5 cannot read; "
        "for a torch source, export with --torch-exporter torchscript --opset 17"
    )
    assert f"  hint: {crash['hint']}" in stdout
    assert "CRASH: a converter or runtime failed" in stdout
