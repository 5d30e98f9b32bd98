"""onnx -> tflite and onnx -> tf with onnx2tf, which runs in its own environment.

The routes (which tool, which environment) are checked without a worker. The conversions run
for real in a worker of the onnx2tf environment (built once, on first use, by the
``onnx2tf_env`` fixture: 70-80 s and 2.6 GB here, then reused), and their models run in
convdiff's own LiteRT and TF workers beside the ONNX source. Values measured with onnx2tf
1.29.24, TensorFlow 2.19.0 (converting) and 2.21.0 / LiteRT 2.3.0 (running).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper

from convdiff.cli import cli
from convdiff.converters import edge, find_chain
from convdiff.converters.onnx2tf import _nhwc_inputs
from convdiff.core import envs
from convdiff.core.cache import file_digest
from convdiff.core.errors import ConvdiffError
from convdiff.core.options import ConvertOptions
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import infer, ok
from tests.tiny.onnx_models import save_graph

DEFAULT = "onnx2tf==1.29.24"
ONNX2TF = ConvertOptions(converters=("onnx2tf",))


def _hops(chain: list) -> list[tuple[str, str, str, str]]:
    return [(h.src, h.dst, h.name, h.env) for h in chain]


# -- routes and the recipe (no worker) ----------------------------------------------------------


def test_both_edges_run_in_the_onnx2tf_environment_only_when_named() -> None:
    for dst in ("tflite", "tf"):
        info = edge("onnx", dst, "onnx2tf")
        assert (info.tool, info.worker, info.env, info.default) == (
            "onnx2tf",
            "tf",
            "onnx2tf",
            False,
        )
        assert info.packages == ("onnx2tf", "tensorflow", "onnx")
    # without --converter the ONNX routes stay onnx2keras'
    assert _hops(find_chain("onnx", "tflite")) == [
        ("onnx", "keras", "onnx2keras", ""),
        ("keras", "tflite", "tflite-converter", ""),
    ]
    assert _hops(find_chain("onnx", "tflite", options=ONNX2TF)) == [
        ("onnx", "tflite", "onnx2tf", DEFAULT)
    ]
    assert _hops(find_chain("onnx", "tf", options=ONNX2TF)) == [("onnx", "tf", "onnx2tf", DEFAULT)]


def test_torch_to_tflite_through_onnx2tf() -> None:
    chain = find_chain("torch", "tflite", options=ONNX2TF)
    assert _hops(chain) == [
        ("torch", "onnx", "torch-onnx", ""),
        ("onnx", "tflite", "onnx2tf", DEFAULT),
    ]
    assert [h.worker_kind for h in chain] == ["torch", f"tf@{DEFAULT}"]
    older = ConvertOptions(converters=("onnx2tf",), tool_versions=("onnx2tf==1.29.0",))
    assert find_chain("torch", "tflite", options=older)[1].env == "onnx2tf==1.29.0"


def test_a_named_tool_is_on_the_route_when_one_of_its_edges_is() -> None:
    """tf2onnx and onnx2tf serve several edges: naming one must not require them all."""
    assert _hops(find_chain("keras", "onnx", options=ConvertOptions(converters=("tf2onnx",)))) == [
        ("keras", "onnx", "tf2onnx", "")
    ]
    assert _hops(find_chain("tflite", "tf", options=ONNX2TF)) == [
        ("tflite", "onnx", "tf2onnx", ""),
        ("onnx", "tf", "onnx2tf", DEFAULT),
    ]


def test_a_route_that_would_convert_back_is_refused() -> None:
    with pytest.raises(ConvdiffError) as caught:
        find_chain("keras", "torch", options=ONNX2TF)  # keras->onnx->tflite->onnx->torch
    assert caught.value.problem == (
        "--converter onnx2tf is not on any route from keras to torch that passes each "
        "framework once"
    )
    assert caught.value.fix == "it converts onnx -> tflite, onnx -> tf"


def test_recipe_pins_what_onnx2tf_leaves_open() -> None:
    recipe = envs.requirement_set("onnx2tf")
    assert envs.parse_requirement("onnx2tf") == ("onnx2tf", "1.29.24")
    lines = [line for line in envs.render_requirements(recipe, "1.29.24").splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == [
        "onnx2tf==1.29.24",
        "sng4onnx==2.0.1",
        "sne4onnx==2.0.1",
    ]
    older = envs.render_requirements(recipe, "1.28.8")  # declares no dependencies itself
    assert "tensorflow==2.19.0\n" in older and "numpy==1.26.4\n" in older


def _nhwc_classifier(path: Path) -> Path:
    """An ONNX classifier that takes NHWC images (as open_nsfw does): Transpose -> Conv ->
    Relu -> GlobalAveragePool -> Flatten -> Gemm, seeded."""
    rng = np.random.default_rng(1)
    weights = {
        "w": rng.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float32),
        "fc": rng.normal(0, 1.0, (5, 6)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Transpose", ["input"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
    ]
    return save_graph(path, nodes, "nhwc", ["batch", 16, 16, 3], "logits", ["batch", 5], weights)


def test_inputs_already_nhwc_are_kept(tiny_onnx: Path, tmp_path: Path) -> None:
    assert _nhwc_inputs(tiny_onnx) == []  # [1, 3, 16, 16]: onnx2tf makes it NHWC
    assert _nhwc_inputs(_nhwc_classifier(tmp_path / "nhwc.onnx")) == ["input"]


# -- conversions in the environment's worker ----------------------------------------------------


@pytest.fixture(scope="session")
def onnx2tf_env() -> envs.ToolEnv:
    """The default onnx2tf environment, built on first use (minutes) and reused after."""
    return envs.ensure_env("onnx2tf")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four seeded NHWC images for the tiny ONNX classifier (16x16x3)."""
    path = tmp_path_factory.mktemp("onnx2tf-images") / "x.npz"
    x = np.random.default_rng(3).normal(size=(4, 16, 16, 3)).astype(np.float32)
    np.savez(path, x=x)
    return path


def _convert(pool: WorkerPool, env: envs.ToolEnv, dst: str, src: Path, out: Path):
    return client.convert(pool, f"tf@{env.name}", "onnx", dst, src, out, {}, tool="onnx2tf")


def _outputs(pool: WorkerPool, framework: str, path: str | Path, images: Path) -> np.ndarray:
    out = images.parent / f"y-{framework}-{Path(path).parent.name}.npz"
    return infer(pool, framework, path, images, out)  # layout "auto": as a run feeds it


@pytest.mark.workers
def test_onnx_to_tflite_takes_nhwc_and_agrees(
    pool: WorkerPool, onnx2tf_env: envs.ToolEnv, tiny_onnx: Path, images: Path, tmp_path: Path
) -> None:
    before = file_digest(tiny_onnx)
    path = ok(_convert(pool, onnx2tf_env, "tflite", tiny_onnx, tmp_path))["path"]
    assert Path(path) == tmp_path / "model_float32.tflite"
    assert file_digest(tiny_onnx) == before  # onnx2tf simplified its own copy, not the source
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx",
        "model_float16.tflite",
        "model_float32.tflite",
        "onnx2tf.json",
        "onnx2tf.log",
        "saved_model",
    ]
    assert json.loads((tmp_path / "onnx2tf.json").read_text())["outputs"] == {
        "tflite": "model_float32.tflite",
        "tf": "saved_model",
    }
    described = ok(client.probe(pool, "tflite", path))
    assert described["input_shape"] == [1, 16, 16, 3]  # the NCHW source's input, as NHWC
    source = _outputs(pool, "onnx", tiny_onnx, images)  # fed NCHW: the same pixels
    target = _outputs(pool, "tflite", path, images)
    assert source.shape == target.shape == (4, 10)
    assert float(np.abs(source - target).max()) < 1e-6  # measured 1.2e-7
    assert (source.argmax(1) == target.argmax(1)).all()


@pytest.mark.workers
def test_onnx_to_tf_saved_model_runs_in_convdiffs_tf(
    pool: WorkerPool, onnx2tf_env: envs.ToolEnv, tiny_onnx: Path, images: Path, tmp_path: Path
) -> None:
    path = ok(_convert(pool, onnx2tf_env, "tf", tiny_onnx, tmp_path))["path"]
    assert Path(path) == tmp_path / "saved_model"
    assert not list(Path(path).glob("*.tflite"))  # the folder holds the SavedModel only
    described = ok(client.probe(pool, "tf", path))  # TF 2.21 loads TF 2.19's SavedModel
    assert (described["input_name"], described["input_shape"]) == ("input", [1, 16, 16, 3])
    assert described["output_shape"] == [1, 10]
    source = _outputs(pool, "onnx", tiny_onnx, images)
    target = _outputs(pool, "tf", path, images)
    assert float(np.abs(source - target).max()) < 1e-6  # measured 1.2e-7


@pytest.mark.workers
def test_an_nhwc_model_keeps_its_input(
    pool: WorkerPool, onnx2tf_env: envs.ToolEnv, images: Path, tmp_path: Path
) -> None:
    """Left to itself onnx2tf makes ``[N, 16, 16, 3]`` a ``[N, 16, 3, 16]`` input."""
    source = _nhwc_classifier(tmp_path / "nhwc.onnx")
    path = ok(_convert(pool, onnx2tf_env, "tflite", source, tmp_path / "out"))["path"]
    assert ok(client.probe(pool, "tflite", path))["input_shape"] == [None, 16, 16, 3]
    record = json.loads((tmp_path / "out" / "onnx2tf.json").read_text())
    assert record["nhwc_inputs_kept"] == ["input"]
    expected = _outputs(pool, "onnx", source, images)
    got = _outputs(pool, "tflite", path, images)
    assert expected.shape == got.shape == (4, 5)
    assert float(np.abs(expected - got).max()) < 1e-5


@pytest.mark.workers
def test_an_op_onnx2tf_lacks_is_a_crash_with_its_reason(
    pool: WorkerPool, onnx2tf_env: envs.ToolEnv, tmp_path: Path
) -> None:
    nodes = [
        helper.make_node("Relu", ["input"], ["r"]),
        helper.make_node("CastLike", ["r", "like"], ["out"]),
    ]
    like = {"like": np.zeros((1,), np.float32)}
    model = save_graph(tmp_path / "castlike.onnx", nodes, "castlike", [1, 3, 8, 8], "out",
                       [1, 3, 8, 8], like, opset=15)  # fmt: skip
    outcome = _convert(pool, onnx2tf_env, "tflite", model, tmp_path / "out")
    assert not outcome
    assert (outcome.error_type, outcome.message) == (
        "RuntimeError",
        "CastLike OP is not yet implemented. "
        "(ModuleNotFoundError: No module named 'onnx2tf.ops.CastLike')",
    )


@pytest.mark.workers
def test_run_reuses_the_environment(
    onnx2tf_env: envs.ToolEnv, tiny_onnx: Path, tmp_path: Path
) -> None:
    """``convdiff run model.onnx --dst tflite --converter onnx2tf``, twice: the environment
    is ready both times (built by the fixture), and its manifest is left as it was."""
    manifest = onnx2tf_env.path / envs.MANIFEST
    stamp = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        args = ["run", str(tiny_onnx), "--dst", "tflite", "--converter", "onnx2tf"]
        result = CliRunner().invoke(cli, [*args, "--limit", "2", "--out", str(out), "--no-cache"])
        assert result.exit_code == 0, result.output
        assert f"[1/4] tool environment {DEFAULT} ... ready" in result.stderr
        assert (
            "1. onnx -> tflite with onnx2tf (onnx2tf 1.29.24, tensorflow 2.19.0, onnx 1.19.1; "
            f"env {DEFAULT}) [defaults]: top-1 0.0%, top-5 0.0%"
        ) in result.stdout
        hop = json.loads((out / "report.json").read_text())["chain"][0]
        assert (hop["converter"], hop["environment"]["name"]) == ("onnx2tf", DEFAULT)
        assert hop["artifact"]["layout"] == "NHWC"
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == stamp


@pytest.mark.slow
def test_mobilenetv2_from_torch_through_onnx2tf(onnx2tf_env: envs.ToolEnv, tmp_path: Path) -> None:
    """``convdiff run --src torch --dst tflite mobilenetv2 --converter onnx2tf``: the dynamo
    export, then onnx2tf; both hops agree at float level (seeded, calibrated weights).
    About 2 min here, 55 s of it onnx2tf."""
    from convdiff.commands.run.flow import run
    from convdiff.commands.run.types import RunConfig
    from convdiff.core.progress import Progress

    config = RunConfig(
        model="mobilenetv2", src="torch", dst="tflite", out=tmp_path / "run",
        cache_dir=tmp_path / "cache", convert=ONNX2TF,
    )  # fmt: skip
    report = run(config, Progress(enabled=False))
    assert report.route == ["torch", "onnx", "tflite"]
    assert [(h.tool, h.converter) for h in report.chain] == [
        ("torch.onnx.export", "torch-onnx"),
        ("onnx2tf", "onnx2tf"),
    ]
    hop = report.chain[1]
    assert hop.environment is not None and hop.environment["name"] == DEFAULT
    assert (tuple(hop.artifact.input_shape), hop.artifact.layout) == ((None, 224, 224, 3), "NHWC")
    assert [h.agreement.top1_discrepancy for h in report.chain] == [0.0, 0.0]
    assert (report.status, report.top1_discrepancy, report.top5_discrepancy) == ("ok", 0.0, 0.0)
    assert report.max_abs_diff < 1e-4  # measured 5.4e-6
