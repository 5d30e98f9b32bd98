"""`convdiff run`'s target preprocessing: the spec the zoo gives a target framework, and a run
that feeds the target exactly that tensor (real workers, the tiny ONNX model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from convdiff.commands.run.types import RunConfig
from convdiff.inputs import data as datasets
from convdiff.inputs import preprocess
from convdiff.inputs.source import resolve_source


def test_target_spec_follows_the_zoo() -> None:
    from convdiff.commands.run.flow import target_spec
    from convdiff.zoo import zoo_model

    def spec_of(model: str, src: str, dst: str) -> tuple[str, str]:
        source = resolve_source(model, src)
        own = zoo_model(model).variant(src).preprocess
        chosen, origin = target_spec(source, dst, own)
        return chosen.name, origin

    assert spec_of("mobilenetv2", "torch", "keras") == (
        "keras-inception-224",
        "the zoo's mobilenetv2 keras spec",
    )
    assert spec_of("mobilenetv2", "torch", "tflite")[0] == "keras-inception-224"
    assert spec_of("resnet101", "keras", "torch") == (
        "torchvision-resnet101",
        "the zoo's resnet101 torch spec",
    )
    assert spec_of("resnet101", "torch", "onnx") == (
        "torchvision-resnet101",
        "the source's (no customary onnx spec known for resnet101)",
    )
    assert spec_of("efficientnet_lite0", "torch", "tflite") == (
        "efficientnet-lite",
        "the source's (no customary tflite spec known for efficientnet_lite0)",
    )


@pytest.mark.workers
def test_run_feeds_the_target_its_own_preprocessing(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file model has no customary target spec, so the test supplies one that differs (the
    mean shifted to 0.5): the target must be fed exactly that tensor, the source its own."""
    import onnxruntime

    import convdiff.commands.run.flow as run_module

    shifted = {}

    def fake_target_spec(source, dst, spec):
        shifted["spec"] = replace(spec, mean=(0.5, 0.5, 0.5), name="shifted")
        return shifted["spec"], "the test's"

    monkeypatch.setattr(run_module, "target_spec", fake_target_spec)
    config = RunConfig(
        model=str(tiny_onnx),
        dst="torch",
        limit=2,
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        target_preprocess="target",
        keep_inputs=True,
    )
    report = run_module.run(config, None)
    records = datasets.sample_set()[:2]
    x = np.load(tmp_path / "run" / "inputs" / "x-source.npy")
    x_target = np.load(tmp_path / "run" / "inputs" / "x-target.npy")
    source_spec = preprocess.PreprocessSpec(size=(16, 16), layout="NCHW")
    np.testing.assert_array_equal(x, preprocess.batch(source_spec, records))
    np.testing.assert_array_equal(x_target, preprocess.batch(shifted["spec"], records))
    assert report.preprocessing["name"] == "custom"
    assert report.preprocessing["target"]["name"] == "shifted"
    assert report.preprocessing["target"]["origin"] == "the test's"
    assert report.preprocessing["target"]["mean"] == [0.5, 0.5, 0.5]

    session = onnxruntime.InferenceSession(str(tiny_onnx))

    def onnx_outputs(batch: np.ndarray) -> np.ndarray:  # the model takes one NCHW image
        nchw = batch.transpose(0, 3, 1, 2)
        return np.concatenate([session.run(None, {"input": nchw[i : i + 1]})[0] for i in (0, 1)])

    expect_target, expect_source = onnx_outputs(x_target), onnx_outputs(x)
    rows = np.load(tmp_path / "run" / "outputs" / "1-torch.npy")  # per-image top-5 records
    for side, expect in (("src", expect_source), ("dst", expect_target)):
        top5 = np.argsort(-expect, axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(rows[f"{side}_top"], top5)
        scores = np.take_along_axis(expect, top5, axis=1)
        np.testing.assert_allclose(rows[f"{side}_scores"], scores, atol=1e-5)
    assert report.max_abs_diff == pytest.approx(
        float(np.abs(expect_source - expect_target).max()), abs=1e-5
    )
    assert report.max_abs_diff > 1e-3  # the target really saw other pixels
    assert "target fed: shifted 16x16" in (tmp_path / "run" / "report.md").read_text()
