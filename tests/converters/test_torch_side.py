"""torch -> onnx (both exporters) and onnx -> torch (onnx2torch) on the tiny seeded model.

Every conversion goes through the convert task (``client.convert``) in a torch worker and is checked
against the eager module's outputs, with onnxruntime running the ONNX files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from convdiff.runtime import client
from convdiff.runtime.pool import TaskOutcome, WorkerPool
from tests.helpers import eager_outputs, infer, torch_images

TINY = "tests.tiny.torch_models"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("torch-convert")


@pytest.fixture(scope="module")
def images(work: Path) -> Path:
    return torch_images(work / "x.npz", 6)


@pytest.fixture(scope="module")
def eager(pool: WorkerPool, images: Path) -> np.ndarray:
    return eager_outputs(pool, images)


def _convert(
    pool: WorkerPool,
    src: str,
    dst: str,
    path: str,
    out: Path,
    input_shape: list[int | None] | None = None,
    **options: object,
) -> TaskOutcome:
    return client.convert(pool, "torch", src, dst, path, out, options, input_shape=input_shape)


def _run(pool: WorkerPool, framework: str, path: str, images: Path) -> np.ndarray:
    out = images.parent / f"{framework}-{Path(path).parent.name}-{Path(path).stem}.npz"
    return infer(pool, framework, path, images, out, layout="NCHW")


def _batch_dim(path: str) -> int | str:
    """The first input's batch dimension: a number, or "symbolic" for a named dimension."""
    dim = onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0]
    return "symbolic" if dim.dim_param else dim.dim_value


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_torch_to_onnx_matches_the_source(
    pool: WorkerPool,
    work: Path,
    tiny_pt2: str,
    images: Path,
    eager: np.ndarray,
    exporter: str,
) -> None:
    outcome = _convert(pool, "torch", "onnx", tiny_pt2, work / exporter, torch_exporter=exporter)
    assert outcome, outcome.message
    path = outcome.value["path"]
    assert Path(path).name == f"model-{exporter}-opset20.onnx"  # torch 2.14's default opset
    # dynamo keeps the program's symbolic batch; the legacy exporter gets a fixed batch of 1
    # from a .pt2 (see test_legacy_exporter_on_a_view_flatten)
    assert _batch_dim(path) == ("symbolic" if exporter == "dynamo" else 1)
    y = _run(pool, "onnx", path, images)
    assert np.abs(y - eager).max() < 1e-5
    assert np.array_equal(y.argmax(1), eager.argmax(1))


def test_dynamo_cannot_write_opset_17(pool: WorkerPool, work: Path, tiny_pt2: str) -> None:
    """Asked for 17, the dynamo exporter writes 18 and only warns in its log: the converter
    refuses the file (a user error), so no report says 17 for an opset-18 file."""
    outcome = _convert(
        pool, "torch", "onnx", tiny_pt2, work / "dyn17", torch_exporter="dynamo", opset=17
    )
    assert (outcome.ok, outcome.error_type) == (False, "ConvdiffError")
    assert outcome.message == (
        "torch.onnx's dynamo exporter wrote opset 18, not the --opset 17 asked for; pass "
        "--opset 18, or leave --opset out"
    )


def test_torchscript_exporter_honours_opset_13(
    pool: WorkerPool, work: Path, tiny_pt2: str, images: Path, eager: np.ndarray
) -> None:
    outcome = _convert(
        pool, "torch", "onnx", tiny_pt2, work / "ts13", torch_exporter="torchscript", opset=13
    )
    assert outcome, outcome.message
    assert Path(outcome.value["path"]).name == "model-torchscript-opset13.onnx"
    assert np.abs(_run(pool, "onnx", outcome.value["path"], images) - eager).max() < 1e-5


def test_onnx_to_torch_round_trip(
    pool: WorkerPool, work: Path, tiny_pt2: str, images: Path, eager: np.ndarray
) -> None:
    exported = _convert(pool, "torch", "onnx", tiny_pt2, work / "rt", torch_exporter="torchscript")
    assert exported, exported.message
    back = _convert(pool, "onnx", "torch", exported.value["path"], work / "rt-back")
    assert back, back.message
    assert back.value["path"] == str(work / "rt-back" / "model.pt2")
    probe = client.probe(pool, "torch", back.value["path"])
    assert probe.value["input_shape"] == [None, 3, 16, 16]
    assert probe.value["format"] == "torch.export"
    assert np.abs(_run(pool, "torch", back.value["path"], images) - eager).max() < 1e-5


def test_onnx2torch_refuses_the_dynamo_export(pool: WorkerPool, work: Path, tiny_pt2: str) -> None:
    """The dynamo exporter turns the global average pool into ReduceMean-18, which
    onnx2torch 1.5.15 does not implement: a crash recorded as the tool's own message."""
    exported = _convert(pool, "torch", "onnx", tiny_pt2, work / "dyn", torch_exporter="dynamo")
    assert exported, exported.message
    back = _convert(pool, "onnx", "torch", exported.value["path"], work / "dyn-back")
    assert not back
    assert back.failure == "exception"
    assert back.error_type == "NotImplementedError"
    assert back.message == (
        "Converter is not implemented (OperationDescription(domain='', "
        "operation_type='ReduceMean', version=18))"
    )


def test_dynamo_exporter_refuses_torchscript(pool: WorkerPool, work: Path) -> None:
    """A TorchScript archive is not something torch.export can trace: the exporter says so."""
    made = pool.call("torch", f"{TINY}:make_tiny", out_dir=str(work / "ts-src"), fmt="pt")
    outcome = _convert(
        pool, "torch", "onnx", made.value["path"], work / "ts-dyn", [None, 3, 16, 16],
        torch_exporter="dynamo",
    )  # fmt: skip
    assert not outcome
    assert outcome.message.startswith("Failed to export the model with torch.export.")


def test_legacy_exporter_on_a_view_flatten(
    pool: WorkerPool, work: Path, images: Path, eager: np.ndarray
) -> None:
    """Traced from a .pt2, ``x.view(x.size(0), -1)`` becomes Reshape [2, -1] (the example's
    batch). With a fixed batch of 1 declared, onnxruntime runs the 6 images one at a time
    and every output is right; the dynamo exporter keeps a real dynamic batch."""
    made = pool.call("torch", f"{TINY}:make_tiny", out_dir=str(work / "view"), view=True)
    assert made, made.message
    for exporter, batch in (("torchscript", 1), ("dynamo", "symbolic")):
        outcome = _convert(
            pool,
            "torch",
            "onnx",
            made.value["path"],
            work / f"view-{exporter}",
            torch_exporter=exporter,
        )
        assert outcome, outcome.message
        assert _batch_dim(outcome.value["path"]) == batch
        assert np.abs(_run(pool, "onnx", outcome.value["path"], images) - eager).max() < 1e-5


def test_legacy_exporter_keeps_a_torchscript_batch_dynamic(
    pool: WorkerPool, work: Path, images: Path, eager: np.ndarray
) -> None:
    made = pool.call(
        "torch", f"{TINY}:make_tiny", out_dir=str(work / "ts-view"), fmt="pt", view=True
    )
    outcome = _convert(
        pool, "torch", "onnx", made.value["path"], work / "ts-view-onnx", [None, 3, 16, 16],
        torch_exporter="torchscript",
    )  # fmt: skip
    assert outcome, outcome.message
    assert _batch_dim(outcome.value["path"]) == "symbolic"
    assert np.abs(_run(pool, "onnx", outcome.value["path"], images) - eager).max() < 1e-5
