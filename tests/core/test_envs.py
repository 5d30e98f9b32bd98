"""Tool environments (:mod:`convdiff.core.envs`): recipes, refusals, and a real build.

The real build (pip, from the package index) of tf2onnx 1.16.1 -- the release the issue names --
goes to a temporary root, so it proves creation from nothing on every CI run; it is in the slow
tier (about a minute and 2 GB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.core import envs
from convdiff.core.errors import ConvdiffError
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import ok

OLD_TF2ONNX = "tf2onnx==1.16.1"


def test_recipe_lines_hold_for_the_releases_they_name() -> None:
    recipe = "tool=={version}\nnumpy\nnumpy<2  # when < 1.17\nextra  # when >= 2.0\n"
    assert envs.render_requirements(recipe, "1.16.1") == "tool==1.16.1\nnumpy\nnumpy<2\n"
    assert envs.render_requirements(recipe, "1.17.0") == "tool==1.17.0\nnumpy\n"
    assert envs.render_requirements(recipe, "2.0") == "tool==2.0\nnumpy\nextra\n"


def test_the_tf2onnx_recipe_keeps_numpy_1_for_releases_that_call_np_cast() -> None:
    old = envs.render_requirements(envs.requirement_set("tf2onnx"), "1.16.1")
    assert "tf2onnx==1.16.1" in old.splitlines() and "numpy<2" in old.splitlines()
    assert "numpy<2" not in envs.render_requirements(envs.requirement_set("tf2onnx"), "1.17.0")


def test_a_tool_without_a_recipe_names_those_with_one() -> None:
    with pytest.raises(ConvdiffError) as caught:
        envs.parse_requirement("onnx-tf==1.10.0")
    assert caught.value.problem == "convdiff has no environment recipe for 'onnx-tf'"
    assert "tf2onnx" in str(caught.value.fix)


def test_nothing_is_listed_in_an_empty_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONVDIFF_ENVS", str(tmp_path / "envs"))
    result = CliRunner().invoke(cli, ["env", "list"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == f"no environment built in {tmp_path / 'envs'}"


@pytest.mark.workers  # no worker, but pip asks the package index: seconds, not the fast tier
def test_a_release_pip_cannot_install_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "envs"
    monkeypatch.setenv("CONVDIFF_ENVS", str(root))
    result = CliRunner().invoke(cli, ["env", "create", "tf2onnx==0.0.1", "--quiet"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: cannot build the environment for tf2onnx==0.0.1: ")
    assert "Could not find a version that satisfies the requirement tf2onnx==0.0.1" in lines[0]
    assert "check that tf2onnx 0.0.1 exists for Python 3.11" in lines[0]
    # no environment, half-built or whole; pip's log kept where the message says
    assert sorted(p.name for p in root.iterdir()) == [
        "tf2onnx-0.0.1.lock",
        "tf2onnx-0.0.1.pip.log",
    ]
    assert envs.find_env("tf2onnx==0.0.1") is None


@pytest.mark.slow
def test_an_environment_is_built_once_and_runs_its_release(
    tmp_path: Path, monkeypatch, keras_cnn: dict[str, str]
) -> None:
    root = tmp_path / "envs"
    monkeypatch.setenv("CONVDIFF_ENVS", str(root))
    result = CliRunner().invoke(cli, ["env", "create", OLD_TF2ONNX, "--quiet"])
    assert result.exit_code == 0, result.output
    env = envs.find_env(OLD_TF2ONNX)
    assert env is not None and env.path == root / "tf2onnx-1.16.1"
    assert env.packages["tf2onnx"] == "1.16.1"
    assert env.packages["numpy"].startswith("1.")  # the recipe's numpy<2 for this release
    manifest = (env.path / envs.MANIFEST).stat().st_mtime_ns

    # reused, not rebuilt
    again = CliRunner().invoke(cli, ["env", "create", OLD_TF2ONNX])
    assert again.output.splitlines()[0] == f"{OLD_TF2ONNX} is already built"
    assert (env.path / envs.MANIFEST).stat().st_mtime_ns == manifest
    listed = CliRunner().invoke(cli, ["env", "list"]).output.splitlines()
    assert [line.split()[0] for line in listed] == [OLD_TF2ONNX]

    # the hop runs under that environment's Python, convdiff's own converter code included
    with WorkerPool(tmp_path / "logs") as pool:
        outcome = client.convert(
            pool, f"tf@{OLD_TF2ONNX}", "keras", "onnx", keras_cnn["keras"], tmp_path / "hop", {}
        )
        converted = ok(outcome)
        assert "worker-tf@tf2onnx-1.16.1" in outcome.log_path
        written = onnx.load(converted["path"])
        assert (written.producer_name, written.producer_version) == ("tf2onnx", "1.16.1 15c810")
        y = tmp_path / "y.npz"
        ok(client.infer(pool, "onnx", converted["path"], keras_cnn["inputs"], y))
    with np.load(y) as got, np.load(keras_cnn["reference"]) as want:
        assert np.abs(got["y"] - want["y"]).max() < 1e-5
