"""`convdiff repair` on faults injected into real exports (slow): the weight and attribute
faults of the generality benchmark (scripts/bench_generality.py) in a vision transformer and a
ConvNeXt.

timm's deit_tiny_patch16_224 and convnext_atto (seeded, BN-calibrated random weights, layer
scales set to one) are exported by torch.onnx's torchscript exporter at opset 17; one fault of
tests/tiny/onnx_faults.py is injected into a middle node whose edit moves the outputs; repair
(source: the torch model, all stages) must write a model whose outputs equal the source's at
float level on the run's images. The layers are paired by their weights (anchors) and the
fault's segment is found by feeding the target the source's tensors (the function check).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from convdiff.commands.localize.types import LocalizeConfig
from convdiff.commands.repair.flow import repair
from convdiff.commands.repair.types import RepairConfig
from convdiff.commands.run.flow import run
from convdiff.commands.run.types import RunConfig, RunReport
from convdiff.core.options import ConvertOptions
from convdiff.core.progress import Progress
from convdiff.inputs.preprocess import PreprocessSpec
from convdiff.runtime.pool import WorkerPool
from tests.tiny.onnx_faults import inject, run_images

pytestmark = [pytest.mark.slow, pytest.mark.workers]

DEIT, CONVNEXT = "timm:deit_tiny_patch16_224", "timm:convnext_atto"
CASES = [
    (DEIT, "scaled_weight"),
    (DEIT, "zeroed_weight"),
    (DEIT, "transposed_square_weight"),
    (DEIT, "layernorm_epsilon"),
    (DEIT, "softmax_axis"),
    (CONVNEXT, "scaled_weight"),
    (CONVNEXT, "layernorm_epsilon"),
    (CONVNEXT, "pads"),
]
FLOAT_LEVEL = 1e-4  # the clean exports differ from the source by ~1e-6


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], RunReport]:
    """The model's torchscript opset-17 ONNX export (converted once a module)."""
    done: dict[str, RunReport] = {}
    cache = tmp_path_factory.mktemp("artifact-cache")

    def get(model: str) -> RunReport:
        if model not in done:
            config = RunConfig(
                model=model,
                src="torch",
                dst="onnx",
                convert=ConvertOptions(torch_exporter="torchscript", opset=17),
                out=tmp_path_factory.mktemp(model.replace(":", "_")),
                cache_dir=cache,
                keep_inputs=True,
                keep_outputs=True,
            )
            report = run(config, Progress(enabled=False))
            assert report.crashes == [] and report.max_abs_diff < 1e-5, report.crashes
            done[model] = report
        return done[model]

    return get


@pytest.mark.parametrize(("model", "fault"), CASES, ids=[f"{m[5:]}-{f}" for m, f in CASES])
def test_repair_restores_the_source_outputs(
    export: Callable[[str], RunReport], pool: WorkerPool, tmp_path: Path, model: str, fault: str
) -> None:
    ran = export(model)
    folder = Path(ran.out_dir)
    x = np.load(folder / "inputs" / "x-source.npy")
    expected = inject(ran.chain[-1].artifact.path, fault, tmp_path / "faulty.onnx", x[:4])
    assert expected is not None, f"no node of {model} takes {fault}"
    config = RepairConfig(
        LocalizeConfig(
            ran.source.path,
            str(tmp_path / "faulty.onnx"),
            src="torch",
            dst="onnx",
            source_spec=PreprocessSpec.from_report(ran.preprocessing),
        ),
        output=tmp_path / "repaired.onnx",
        out=tmp_path / "repair",
    )
    report = repair(config, Progress(enabled=False), pool)
    assert report.status == "repaired", (expected.change, report.top, report.edits)
    source = np.load(folder / "outputs" / "y-0-torch.npy")
    repaired = run_images(onnx.load(tmp_path / "repaired.onnx"), x)
    assert np.abs(repaired - source).max() < FLOAT_LEVEL, (expected.change, report.edits)
