"""Float fallback of ONNX files quantized by onnxruntime (convdiff.repair.fallback_onnx), on the
tiny ONNX classifier quantized for real (``quantize_dynamic``; ``quantize_static`` in QDQ):
which ops are its quantized layers, what :func:`write` makes of one layer of each kind (that
node in float, the others still quantized, the file running in onnxruntime), the switchable
model the measure runs, the ranking (an onnx worker) and a repair that falls back with the
source's float weights (workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from convdiff.commands.localize.flow import LocalizeConfig
from convdiff.commands.repair.flow import repair
from convdiff.commands.repair.types import RepairConfig
from convdiff.core.progress import Progress
from convdiff.ir import onnx_quant
from convdiff.repair import fallback_onnx
from convdiff.repair.fallback import FallbackContext
from convdiff.runtime.pool import WorkerPool
from tests.tiny.onnx_quant_models import quantize

IMAGES = np.random.default_rng(5).normal(0, 1, (6, 16, 16, 3)).astype(np.float32)  # NHWC


@pytest.fixture(scope="module")
def files(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fallback-onnx")
    np.savez(folder / "x.npz", x=IMAGES)
    made = {
        m: quantize(tiny_onnx, folder / f"{m}.onnx", m, per_channel=True)
        for m in ("dynamic", "qdq")
    }
    return {**made, "images": folder / "x.npz"}


def _context(
    target: Path, images: Path, work: Path, pool: WorkerPool | None = None
) -> FallbackContext:
    """A context without a localization: float layers compute on the dequantized weights."""
    return FallbackContext(
        source=target,
        source_framework="onnx",
        target=target,
        images=images,
        pool=pool,
        work=work,  # type: ignore[arg-type]
    )


def _run(path: Path | str, optimize: bool = True, mask: np.ndarray | None = None) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = IMAGES.transpose(0, 3, 1, 2)
    feeds = [{"input": x[i : i + 1]} for i in range(len(x))]
    if mask is not None:
        feeds = [{**f, fallback_onnx.MASK: mask} for f in feeds]
    return np.concatenate([session.run(None, f)[0] for f in feeds])


def _nodes(path: Path) -> list[tuple[str, str, list[str]]]:
    return [
        (n.op_type, onnx_quant.file_name(n), list(n.input)) for n in onnx.load(str(path)).graph.node
    ]


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_the_quantized_layers_are_the_ops_computing_on_integers(
    files: dict[str, Path], tiny_onnx: Path
) -> None:
    layers = {m: fallback_onnx.layers_of(onnx.load(str(files[m]))) for m in ("dynamic", "qdq")}
    assert [(x.name, x.kind) for x in layers["dynamic"]] == [
        ("c_output_quantized", "integer"),
        ("logits_MatMul_output_quantized", "integer"),
    ]
    # QDQ: the conv and the Gemm on dequantized weights, and every op reading through a pair
    assert [(x.name, x.kind) for x in layers["qdq"]] == [
        ("r", "qdq"),  # the Conv (its Relu folded into r's range)
        ("g", "qdq"),  # GlobalAveragePool
        ("f", "qdq"),  # Flatten
        ("logits", "qdq"),  # Gemm
        ("probs_QuantizeLinear_Input", "qdq"),  # Softmax
    ]
    assert fallback_onnx.layers_of(onnx.load(str(tiny_onnx))) == []


def test_a_dynamic_layer_in_float_reads_the_float_activation(
    files: dict[str, Path], tmp_path: Path
) -> None:
    ctx = _context(files["dynamic"], files["images"], tmp_path)
    out = fallback_onnx.write(ctx, ["c_output_quantized"], tmp_path / "one.onnx")
    # the ConvInteger and its DynamicQuantizeLinear / Cast / Mul / bias Add: one float Conv
    # writing the tensor the chain ended in; the MatMulInteger still quantized
    assert _ops(out) == [
        "Conv",
        "Relu",
        "GlobalAveragePool",
        "Flatten",
        "DynamicQuantizeLinear",
        "Mul",
        "MatMulInteger",
        "Cast",
        "Mul",
        "Add",
        "Softmax",
    ]
    conv = onnx.load(str(out)).graph.node[0]
    assert (conv.name, list(conv.input), list(conv.output)) == (
        "c_output_quantized",
        ["input", "c_output_quantized.weight", "c_output_quantized.bias"],
        ["c"],
    )
    (weight,) = [w for w in onnx_quant.read(files["dynamic"]).weights if w.op_type == "ConvInteger"]
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(stored["c_output_quantized.weight"], weight.dequantized())
    assert _run(out).shape == (6, 10)


def test_a_qdq_conv_in_float_reads_the_tensor_before_its_pair(
    files: dict[str, Path], tmp_path: Path
) -> None:
    ctx = _context(files["qdq"], files["images"], tmp_path)
    out = fallback_onnx.write(ctx, ["r"], tmp_path / "conv.onnx")
    nodes = _nodes(out)
    # the input's pair had the conv as its only reader: gone; the weight still dequantized (no
    # float weight without a localization); the pooling still reads r through its pair
    assert ("Conv", "r", ["input", "conv_w_DequantizeLinear_Output", "conv_b"]) in nodes
    assert "input_QuantizeLinear" not in {name for _, name, _ in nodes}
    assert ("GlobalAveragePool", "g", ["r_DequantizeLinear_Output"]) in nodes
    assert _ops(out).count("QuantizeLinear") == 5 and _run(out).shape == (6, 10)


def test_a_layer_reading_a_folded_relu_reads_its_clamp(
    files: dict[str, Path], tmp_path: Path
) -> None:
    ctx = _context(files["qdq"], files["images"], tmp_path)
    out = fallback_onnx.write(ctx, ["g"], tmp_path / "pool.onnx")
    model = onnx.load(str(out))
    pool = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    assert list(pool.input) == ["r/float_activation"] and list(clip.output) == [
        "r/float_activation"
    ]
    quantized = onnx.load(str(files["qdq"]))
    q = next(n for n in quantized.graph.node if n.name == "r_QuantizeLinear")
    low, high = onnx_quant.folded_clamp(onnx_quant.Graph(quantized), q)  # type: ignore[misc]
    bounds = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert float(bounds[clip.input[1]]) == low
    assert float(bounds[clip.input[2]]) == pytest.approx(high, rel=1e-7)
    # r's pair had the pooling as its only reader: gone, the clamp reads the conv's output
    assert clip.input[0] == "r" and "r_QuantizeLinear" not in {n.name for n in model.graph.node}
    assert _run(out).shape == (6, 10)


def test_the_last_layer_takes_the_graph_outputs_pair_with_it(
    files: dict[str, Path], tmp_path: Path
) -> None:
    ctx = _context(files["qdq"], files["images"], tmp_path)
    out = fallback_onnx.write(ctx, ["probs_QuantizeLinear_Input"], tmp_path / "softmax.onnx")
    model = onnx.load(str(out))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert list(softmax.input) == ["logits"] and list(softmax.output) == ["probs"]
    assert [o.name for o in model.graph.output] == ["probs"]
    probs = _run(out)  # no longer rounded to the output's 1/255 steps
    scale = float(
        numpy_helper.to_array(
            next(
                i for i in onnx.load(str(files["qdq"])).graph.initializer if i.name == "probs_scale"
            )
        )
    )
    assert not np.allclose(probs / scale, np.round(probs / scale), atol=1e-3)


def test_every_layer_in_float_is_the_float_model_on_the_dequantized_weights(
    files: dict[str, Path], tmp_path: Path
) -> None:
    layers = [x.name for x in fallback_onnx.layers_of(onnx.load(str(files["qdq"])))]
    out = fallback_onnx.write(
        _context(files["qdq"], files["images"], tmp_path), layers, tmp_path / "all.onnx"
    )
    assert "QuantizeLinear" not in _ops(out) and _ops(out).count("DequantizeLinear") == 4  # weights
    twin = onnx_quant.float_twin(files["qdq"], tmp_path / "twin.onnx")  # the same function
    np.testing.assert_allclose(_run(out), _run(twin), atol=1e-6)


def test_unknown_layers_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="'input_QuantizeLinear' is not a quantized layer of qdq.onnx"
    ):
        fallback_onnx.write(
            _context(files["qdq"], files["images"], tmp_path),
            ["input_QuantizeLinear"],
            tmp_path / "x.onnx",
        )


@pytest.mark.parametrize("mode", ["dynamic", "qdq"])
def test_the_switchable_model_is_the_float_file_at_0_and_the_quantized_at_1(
    files: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    model = onnx.load(str(files[mode]))
    layers = fallback_onnx.layers_of(model)
    path = tmp_path / "switch.onnx"
    onnx.save(fallback_onnx.switchable(model, layers, {}), str(path))
    every = fallback_onnx.write(
        _context(files[mode], files["images"], tmp_path),
        [x.name for x in layers],
        tmp_path / "all.onnx",
    )
    zeros, ones = np.zeros(len(layers), np.float32), np.ones(len(layers), np.float32)
    np.testing.assert_allclose(_run(path, mask=zeros), _run(every), atol=1e-6)
    np.testing.assert_allclose(_run(path, mask=ones), _run(files[mode], optimize=False), atol=1e-6)
    # one bit: that layer alone quantized -- what write() of all the others in float computes
    first = zeros.copy()
    first[0] = 1.0
    others = fallback_onnx.write(
        _context(files[mode], files["images"], tmp_path),
        [x.name for x in layers[1:]],
        tmp_path / "others.onnx",
    )
    np.testing.assert_allclose(_run(path, mask=first), _run(others, optimize=False), atol=1e-6)


@pytest.mark.workers
def test_candidates_are_each_layers_share_of_the_output_error(
    pool: WorkerPool, files: dict[str, Path], tmp_path: Path
) -> None:
    """Measured in the worker on the first 4 images; here again by writing each layer alone
    quantized (all the others in float) and running it: the same shares, the same order."""
    ctx = _context(files["qdq"], files["images"], tmp_path, pool)
    found = fallback_onnx.candidates(ctx)
    layers = [x.name for x in fallback_onnx.layers_of(onnx.load(str(files["qdq"])))]
    assert [c.layer for c in found] == layers
    assert sum(c.contribution for c in found) == pytest.approx(1.0)
    assert found[0].measure.endswith("(onnxruntime, 4 images)")
    every = _run(fallback_onnx.write(ctx, layers, tmp_path / "all.onnx"))[:4]
    errors = []
    for name in layers:
        alone = fallback_onnx.write(ctx, [n for n in layers if n != name], tmp_path / "alone.onnx")
        errors.append(float(np.sum((_run(alone, optimize=False)[:4] - every) ** 2)))
    shares = np.asarray(errors) / sum(errors)
    np.testing.assert_allclose([c.contribution for c in found], shares, rtol=1e-3, atol=1e-6)


@pytest.mark.workers
def test_repair_falls_back_the_fewest_layers_with_the_sources_weights(
    pool: WorkerPool, tiny_onnx: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    """The QDQ file disagrees with its float source on one of the 16 sample photos; the
    search keeps two layers in float (measured), whose weights are then the source's own."""
    config = RepairConfig(
        localize=LocalizeConfig(str(tiny_onnx), str(files["qdq"]), out=tmp_path / "loc"),
        output=tmp_path / "fixed.onnx",
        out=tmp_path / "repair",
    )
    report = repair(config, Progress(enabled=False), pool)
    fallback = report.fallback
    assert report.status == "repaired"
    assert (fallback["quantized_layers"], fallback["top1_before"], fallback["top1_after"]) == (
        5,
        6.25,
        0.0,
    )
    assert fallback["layers"] == ["logits", "f"]
    fixed = onnx.load(str(tmp_path / "fixed.onnx"))
    gemm = next(n for n in fixed.graph.node if n.op_type == "Gemm")
    stored = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}
    source = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tiny_onnx)).graph.initializer}
    np.testing.assert_array_equal(stored[gemm.input[1]], source["fc_w"])
    np.testing.assert_array_equal(stored[gemm.input[2]], source["fc_b"])
    assert gemm.input[0] == "f"  # the Flatten in float too: g's pair is gone
    quantizing = [n.input[0] for n in fixed.graph.node if n.op_type == "QuantizeLinear"]
    assert quantizing == ["input", "r", "logits", "probs_QuantizeLinear_Input"]


@pytest.mark.workers
def test_with_a_localization_a_folded_relu_comes_back_as_the_sources_relu(
    pool: WorkerPool, tiny_onnx: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    """The pair r_QuantizeLinear clamps to the largest value calibration saw; the source has
    a ReLU there (the localization pairs the twin's clip with it): in float, a Relu."""
    from convdiff.commands.localize.flow import localize

    found = localize(
        LocalizeConfig(str(tiny_onnx), str(files["qdq"]), out=tmp_path / "loc"),
        Progress(enabled=False),
        pool,
    )
    ctx = _context(files["qdq"], files["images"], tmp_path, pool)
    ctx.findings, ctx.stage_context = found.findings, found.context
    assert fallback_onnx.source_activations(ctx) == {"r_QuantizeLinear": (0.0, float("inf"))}
    model = onnx.load(str(fallback_onnx.write(ctx, ["g"], tmp_path / "pool.onnx")))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert (list(relu.input), list(relu.output)) == (["r"], ["r/float_activation"])
    assert "Clip" not in {n.op_type for n in model.graph.node}
