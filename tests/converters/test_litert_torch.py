"""torch -> tflite with litert-torch, the edge's default tool, in its own tool environment.

The environment is built once a session (``litert_torch_worker`` in tests/conftest.py) when
it is not already. The tiny seeded torch model is converted for real by the convert task in
that environment's worker and run by convdiff's LiteRT runner against the eager module. The
routes are checked without workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.converters import find_chain
from convdiff.core.envs import parse_requirement
from convdiff.core.options import ConvertOptions
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import eager_outputs, infer, torch_images

TINY = "tests.tiny.torch_models"


def _route(src: str, dst: str, converters: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The chain's tools and the worker kind each runs in."""
    chain = find_chain(src, dst, (), ConvertOptions(converters=converters))
    return [(hop.name, hop.worker_kind) for hop in chain]


def test_torch_to_tflite_is_litert_torch_in_its_environment() -> None:
    assert parse_requirement("litert-torch") == ("litert-torch", "0.10.0")
    assert _route("torch", "tflite") == [("litert-torch", "torch@litert-torch==0.10.0")]


def test_the_onnx2keras_route_stays_reachable_by_name() -> None:
    assert _route("torch", "tflite", converters=("onnx2keras",)) == [
        ("torch-onnx", "torch"),
        ("onnx2keras", "tf"),
        ("tflite-converter", "tf"),
    ]


def test_onnx_to_tflite_keeps_the_route_that_needs_no_environment() -> None:
    """Both routes are two hops; the one through litert-torch's environment only when named."""
    assert _route("onnx", "tflite") == [("onnx2keras", "tf"), ("tflite-converter", "tf")]
    assert _route("onnx", "tflite", converters=("litert-torch",)) == [
        ("onnx2torch", "torch"),
        ("litert-torch", "torch@litert-torch==0.10.0"),
    ]


def test_a_tflite_converter_option_is_refused_on_the_litert_route(tmp_path: Path) -> None:
    args = ["run", "mobilenetv2", "--src", "torch", "--dst", "tflite", "--tflite-opt", "float16"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "r"), "--quiet"])
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --tflite-opt float16 is an option of a converter this run does not use (route: "
        "torch -> tflite); drop --tflite-opt, or choose a route through that converter\n",
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("litert-torch")


@pytest.mark.workers
def test_tiny_model_converts_at_float_level(
    pool: WorkerPool, litert_torch_worker: str, work: Path, tiny_pt2: str
) -> None:
    images = torch_images(work / "x.npz", 6)
    eager = eager_outputs(pool, images)
    outcome = client.convert(
        pool, litert_torch_worker, "torch", "tflite", tiny_pt2, work / "tiny", {}
    )
    assert outcome, outcome.message
    path = outcome.value["path"]
    assert path == str(work / "tiny" / "model.tflite")
    probe = client.probe(pool, "tflite", path)
    # NCHW kept, batch fixed at 1: the runner feeds the 6 images one at a time
    assert (probe.value["input_shape"], probe.value["output_shape"]) == ([1, 3, 16, 16], [1, 5])
    y = infer(pool, "tflite", path, images, work / "y.npz")
    assert np.abs(y - eager).max() < 1e-6  # 1.8e-7 measured
    assert np.array_equal(y.argmax(1), eager.argmax(1))


@pytest.mark.workers
def test_a_torchscript_source_is_litert_torchs_own_crash(
    pool: WorkerPool, litert_torch_worker: str, work: Path
) -> None:
    made = pool.call("torch", f"{TINY}:make_tiny", out_dir=str(work / "ts"), fmt="pt")
    assert made, made.message
    outcome = client.convert(
        pool, litert_torch_worker, "torch", "tflite", made.value["path"], work / "ts-out", {},
        input_shape=[None, 3, 16, 16],
    )  # fmt: skip
    assert (outcome.ok, outcome.failure, outcome.error_type) == (False, "exception", "ValueError")
    assert outcome.message.startswith("Exporting a ScriptModule is not supported.")


@pytest.mark.workers
def test_a_pt2_that_runs_code_is_refused_in_the_environment(
    pool: WorkerPool, litert_torch_worker: str, work: Path
) -> None:
    """The environment loads the source with convdiff.frameworks.torch, so the same rule
    holds there: a pickled payload in a .pt2 is refused before any of it runs."""
    model, marker = work / "evil.pt2", work / "marker"
    made = pool.call("torch", "tests.tiny.hostile:pickled_pt2", path=str(model), marker=str(marker))
    assert made, made.message
    outcome = client.convert(
        pool, litert_torch_worker, "torch", "tflite", str(model), work / "evil-out", {}
    )
    assert (outcome.ok, outcome.error_type) == (False, "UnsafeModelError")
    assert outcome.message == (
        "evil.pt2 holds pickled Python objects among its weights: loading it would run code "
        "from the file, and convdiff runs no code from model files it did not write; if you "
        "trust this file, pass --trust-model-code"
    )
    assert not marker.exists()
