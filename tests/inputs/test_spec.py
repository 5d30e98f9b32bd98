"""One preprocessing resolver for every command (inputs/spec.py): the same options on the same
model give the same spec or the same one-line error, whichever command takes them.

`localize` used to take the model's size first and silently ignore an ``--input-size`` that
contradicted it; `run` refused it. Each command that takes preprocessing options is tried here
with that contradiction (real workers: the model is loaded to read its input)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.core.errors import InputShapeError
from convdiff.core.options import PreprocessOptions
from convdiff.inputs.spec import resolve_spec
from tests.tiny.onnx_models import tiny_classifier

CONTRADICTION = (
    "error: the model takes 16x16 images but --input-size says 32x32; "
    "drop --input-size or pass --input-size 16,16\n"
)


def _commands(model: Path, out: Path) -> dict[str, list[str]]:
    size = ["--input-size", "32,32", "--out", str(out)]
    return {
        "run": ["run", str(model), "--dst", "torch", "--no-cache", *size],
        "localize": ["localize", str(model), str(model), *size],
        "repair": ["repair", str(model), str(model), "-o", str(out / "r.onnx"), *size],
    }


@pytest.mark.workers
@pytest.mark.parametrize("command", ["run", "localize", "repair"])
def test_every_command_refuses_an_input_size_the_model_contradicts(
    tmp_path: Path, command: str
) -> None:
    model = tiny_classifier(tmp_path / "tiny.onnx")
    args = _commands(model, tmp_path / "out")[command]
    result = CliRunner().invoke(cli, [*args, "--quiet"])
    assert (result.exit_code, result.stderr) == (2, CONTRADICTION)


@pytest.mark.parametrize(
    ("shape", "options", "expected"),
    [
        # the model's static size; --input-size equal to it
        ([1, 3, 16, 16], PreprocessOptions(preprocess="imagenet"), ((16, 16), "NCHW")),
        ([1, 16, 16, 3], PreprocessOptions(input_size=(16, 16)), ((16, 16), "NHWC")),
        # a dynamic size needs --input-size; --layout overrides what the shape suggests
        ([None, 3, None, None], PreprocessOptions(input_size=(8, 12)), ((8, 12), "NCHW")),
        ([1, 3, 16, 3], PreprocessOptions(input_size=(3, 16), layout="nhwc"), ((3, 16), "NHWC")),
    ],
)
def test_resolve_spec(shape: list, options: PreprocessOptions, expected: tuple) -> None:
    spec = resolve_spec("onnx", shape, options)
    assert (spec.size, spec.layout) == expected


@pytest.mark.parametrize(
    ("shape", "options", "message"),
    [
        ([1, 3, 16, 16], PreprocessOptions(input_size=(32, 32)), "the model takes 16x16 images"),
        ([1, 4, 16, 16], PreprocessOptions(), "the model takes 4 input channels"),
        ([1, 3, None, None], PreprocessOptions(), "does not say the image size"),
        ([1, 10], PreprocessOptions(), "the model's input has shape [1, 10]"),
    ],
)
def test_resolve_spec_refuses(shape: list, options: PreprocessOptions, message: str) -> None:
    with pytest.raises(InputShapeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_spec("onnx", shape, options)


def test_own_size_takes_the_model_size_over_the_option() -> None:
    """A target fed its own framework's preprocessing takes images at its own size."""
    own = PreprocessOptions(preprocess="imagenet", input_size=(32, 32))
    assert resolve_spec("onnx", [1, 3, 16, 16], own, own_size=True).size == (16, 16)
