"""Shared fixtures and the test tiers. The test process, like convdiff's orchestrator, never
imports TF or torch: framework code runs in workers, and helpers that build tiny models live in
``tests/tiny/``, which workers import through PYTHONPATH.

Tiers: a test that starts a worker process is marked ``workers`` (those of the session ``pool``
and the ``slow`` ones are marked here; a module or test that starts workers another way -- a
CLI run, a subprocess, its own :class:`WorkerPool` -- says so with ``pytest.mark.workers``), so
``pytest -m "not slow and not workers"`` runs the rest in well under a minute. A test that is
not marked ``workers`` and starts one anyway fails with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.helpers import ROOT, convert, ok
from tests.tiny.faults import fault_base
from tests.tiny.ir_models import tiny_rich_cnn
from tests.tiny.onnx_models import opset18_reduce_mean, tiny_classifier

os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)

UNMARKED_WORKER = "this test starts a worker process: mark it workers"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pool" in getattr(item, "fixturenames", ()) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.workers)


# The test being run (set up, called, torn down): a module or session fixture it sets up starts
# its workers in that test's name. And the tests not marked workers that tried to start one.
_running: list[pytest.Item] = []
_unmarked: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """The guard's verdict stands even where the code under test caught its AssertionError
    (the CLI reports it as an internal error, a table cell as an error, and so on)."""
    report = yield
    if item.nodeid in _unmarked and report.when == "call":
        if report.passed:
            report.outcome, report.longrepr = "failed", UNMARKED_WORKER
        else:
            report.sections.append(("workers guard", UNMARKED_WORKER))
    return report


@pytest.fixture(autouse=True, scope="session")
def _workers_only_in_marked_tests() -> Iterator[None]:
    """A worker started for a test not marked ``workers`` raises, there and then."""
    start = WorkerPool._start

    def guarded(self: WorkerPool, kind: str):  # the pool's private _Worker
        item = _running[-1] if _running else None
        if item is not None and item.get_closest_marker("workers") is None:
            _unmarked.add(item.nodeid)
            raise AssertionError(UNMARKED_WORKER)
        return start(self, kind)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WorkerPool, "_start", guarded)
        yield


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    """One worker pool for the whole session: each framework is imported once."""
    with WorkerPool(tmp_path_factory.mktemp("worker-logs"), timeout=900) as workers:
        yield workers


# -- the tiny models several modules use, built once a session -------------------------------
# Tests read them and never change them (a few leave outputs beside them, named after the model).


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ONNX classifier (16x16 input, 10 classes; tests/tiny/onnx_models.py)."""
    return tiny_classifier(tmp_path_factory.mktemp("tiny-onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def reduce18_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX model onnx2torch cannot convert (ReduceMean-18): a real converter crash."""
    return opset18_reduce_mean(tmp_path_factory.mktemp("reduce18") / "reduce18.onnx")


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault base: the ONNX model each fault of tests/tiny/faults.py is injected into."""
    return fault_base(tmp_path_factory.mktemp("faults") / "base.onnx")


@pytest.fixture(scope="session")
def rich_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rich NCHW ONNX CNN (conv+BN+ReLU6, pools, flatten, dense; tests/tiny/ir_models.py)."""
    return tiny_rich_cnn(tmp_path_factory.mktemp("rich") / "rich.onnx")


@pytest.fixture(scope="session")
def rich_keras(pool: WorkerPool, rich_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``rich_onnx`` converted by onnx2keras: channels_first layers named after the ONNX nodes."""
    return convert(pool, "onnx", "keras", rich_onnx, tmp_path_factory.mktemp("rich-keras"))


@pytest.fixture(scope="session")
def rich_tflite(pool: WorkerPool, rich_keras: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``rich_keras`` converted by the TFLiteConverter (float): explicit pads, NHWC transposes
    around every conv and pool, BatchNorm folded."""
    return convert(pool, "keras", "tflite", rich_keras, tmp_path_factory.mktemp("rich-tflite"))


@pytest.fixture(scope="session")
def keras_cnn(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny Keras CNN with 4 filters: every weight tensor is below TFLite's 1024-element
    quantization threshold. Paths of model.keras, model.h5, inputs.npz and reference.npz."""
    out = tmp_path_factory.mktemp("keras-cnn")
    return ok(pool.call("tf", "tests.tiny.keras_models:build_tiny_cnn", out_dir=str(out)))


@pytest.fixture(scope="session")
def keras_cnn_q(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny Keras CNN with 48 filters: its 1296-element convolution kernel is quantized
    to int8 by dynamic-range optimization (the dense kernel, 240 weights, is not)."""
    out = tmp_path_factory.mktemp("keras-cnn-q")
    return ok(
        pool.call("tf", "tests.tiny.keras_models:build_tiny_cnn", out_dir=str(out), filters=48)
    )


@pytest.fixture(scope="session")
def dynamic_range_tflite(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """``keras_cnn_q`` converted to TFLite with dynamic-range optimization: one int8 kernel."""
    out = tmp_path_factory.mktemp("keras-cnn-q-dynamic-range")
    return convert(pool, "keras", "tflite", keras_cnn_q["keras"], out, tflite_opt="dynamic-range")


@pytest.fixture(scope="session")
def int8_tflite(
    pool: WorkerPool, keras_cnn_q: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """``keras_cnn_q`` converted to full-integer TFLite (``--tflite-opt int8``, float input and
    output), calibrated on its 4 input images: 4 layers compute in int8 (conv, mean, dense,
    softmax)."""
    out = tmp_path_factory.mktemp("keras-cnn-q-int8")
    converted = client.convert(
        pool,
        "tf",
        "keras",
        "tflite",
        keras_cnn_q["keras"],
        out,
        {"tflite_opt": "int8"},
        calibration=keras_cnn_q["inputs"],
    )
    return ok(converted)["path"]


@pytest.fixture(scope="session")
def tiny_pt2(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny seeded torch module (tests/tiny/torch_models.py) saved as torch.export .pt2."""
    out = tmp_path_factory.mktemp("tiny-pt2")
    return ok(pool.call("torch", "tests.tiny.torch_models:make_tiny", out_dir=str(out)))["path"]


@pytest.fixture(scope="session")
def torch_source(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny torch model with named modules the repair tests edit (conv1, bn1, fc, ...)."""
    out = tmp_path_factory.mktemp("torch-source") / "source.pt2"
    return Path(ok(pool.call("torch", "tests.tiny.repair_frameworks:torch_source", out=str(out))))


@pytest.fixture(scope="session")
def litert_torch_worker() -> str:
    """The worker kind of litert-torch's tool environment, built here once a session when it is
    not yet (pip: about 2 minutes and 6.6 GB on this machine), reused from then on."""
    from convdiff.converters import find_chain
    from convdiff.core.envs import ensure_env

    (hop,) = find_chain("torch", "tflite")
    ensure_env(hop.env)
    return hop.worker_kind


@pytest.fixture(autouse=True, scope="session")
def _no_frameworks_in_test_process() -> Iterator[None]:
    yield
    import sys

    leaked = [m for m in ("tensorflow", "torch", "keras") if m in sys.modules]
    assert not leaked, f"the test process imported {leaked}; run framework code in a worker"
