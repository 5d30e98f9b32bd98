"""Property: whatever bytes a model file holds, `run` and `localize` answer with a report or a
one-line user error -- never a traceback, never convdiff's own bug (exit 4).

Hypothesis cuts real tiny models of every format short or flips bytes in their first KB,
where the structure lives (headers, graph protobufs, flatbuffer tables, zip directories), and
feeds them to the library calls the CLI makes, on one shared pool (a worker that a file
crashes is restarted). Examples are derandomized: CI runs the same ones every time."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from convdiff.api import LocalizeConfig, RunConfig, localize, run
from convdiff.core.errors import ConvdiffError
from convdiff.core.progress import Progress
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from tests.tiny.onnx_models import tiny_classifier

pytestmark = pytest.mark.workers
# per format and command: 4 formats x 2 commands x 40 = 320 examples in all
EXAMPLES = int(os.environ.get("CONVDIFF_FUZZ_EXAMPLES", "40"))
HEAD = 1024  # flips land in the first KB: the file's structure, not its weights
ROUTES = {"onnx": "torch", "tflite": "onnx", "keras": "tflite", "pt2": "onnx"}  # run's --dst


@pytest.fixture(scope="module")
def seeds(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One valid tiny model per format, as bytes."""
    folder = tmp_path_factory.mktemp("seeds")
    keras = pool.call("tf", "tests.tiny.keras_models:build_tiny_cnn", out_dir=str(folder / "k"))
    assert keras, keras.message
    tflite = client.convert(
        pool, "tf", "keras", "tflite", keras.value["keras"], folder / "t", {"tflite_opt": "none"}
    )
    assert tflite, tflite.message
    torch = pool.call("torch", "tests.tiny.torch_models:make_tiny", out_dir=str(folder / "p"))
    assert torch, torch.message
    files = {
        "onnx": tiny_classifier(folder / "tiny.onnx"),
        "tflite": Path(tflite.value["path"]),
        "keras": Path(keras.value["keras"]),
        "pt2": Path(torch.value["path"]),
    }
    return {fmt: path.read_bytes() for fmt, path in files.items()}


@st.composite
def damaged(draw: st.DrawFn, blob: bytes) -> bytes:
    """The file cut at a random length, or with 1 to 8 bytes of its first KB changed."""
    if draw(st.booleans()):
        return blob[: draw(st.integers(0, len(blob) - 1))]
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, min(HEAD, len(data)) - 1))
        data[at] = draw(st.integers(0, 255).filter(lambda b, at=at: b != data[at]))
    return bytes(data)


def _write(blob: bytes, fmt: str, folder: Path) -> Path:
    path = folder / f"model.{fmt}"
    path.write_bytes(blob)
    return path


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("fmt", sorted(ROUTES))
def test_run_answers_any_bytes(pool: WorkerPool, seeds: dict[str, bytes], fmt: str) -> None:
    dst = ROUTES[fmt]

    @FUZZ
    @given(blob=damaged(seeds[fmt]))
    def check(blob: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="convdiff-fuzz-") as tmp:
            model = _write(blob, fmt, Path(tmp))
            config = RunConfig(
                model=str(model),
                dst=dst,
                out=Path(tmp) / "run",
                use_cache=False,
                limit=2,
                timeout=120,
            )
            try:
                report = run(config, Progress(enabled=False), pool=pool)
            except ConvdiffError as exc:  # a one-line user error (exit 2)
                event(f"refused: {str(exc)[:40]}")
                return
            event(f"report: {report.status}")
            assert report.status in ("ok", "discrepancy", "crash"), report.status

    check()


@pytest.mark.parametrize("fmt", sorted(ROUTES))
def test_localize_answers_any_bytes(
    pool: WorkerPool, seeds: dict[str, bytes], fmt: str, tmp_path: Path
) -> None:
    source = _write(seeds[fmt], fmt, tmp_path)

    @FUZZ
    @given(blob=damaged(seeds[fmt]))
    def check(blob: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="convdiff-fuzz-") as tmp:
            target = _write(blob, fmt, Path(tmp))
            config = LocalizeConfig(
                source=str(source),
                target=str(target),
                stages=("weights", "hyperparams", "graph"),
                out=Path(tmp) / "loc",
                timeout=120,
            )
            try:
                report = localize(config, Progress(enabled=False), pool)
            except ConvdiffError as exc:
                event(f"refused: {str(exc)[:40]}")
                return
            event(f"report: exit {report.exit_code}")
            assert report.exit_code in (0, 1, 2, 3)

    check()
