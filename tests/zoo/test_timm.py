"""``timm:<name>``: the catalog (fast, from the committed table), real timm builds in workers,
and end-to-end runs through the CLI. Nothing downloads: random weights or local files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.core.errors import ConvdiffError, UnknownModelError
from convdiff.inputs.preprocess import IMAGENET_MEAN, IMAGENET_STD, apply
from convdiff.inputs.source import resolve_source
from convdiff.runtime import client
from convdiff.runtime.pool import WorkerPool
from convdiff.zoo import is_zoo_name, weights_plan, zoo_model
from tests.helpers import ROOT, infer, ok

# -- catalog ---------------------------------------------------------------------------------


def test_timm_names_resolve_lazily() -> None:
    assert is_zoo_name("timm:resnet18") and is_zoo_name("timm:anything")  # checked on use
    model = zoo_model("timm:resnet18")
    assert (model.name, model.frameworks) == ("timm:resnet18", ("torch",))
    v = model.variant("torch")
    assert (v.builder, v.num_classes, v.worker) == ("timm.create_model('resnet18')", 1000, "torch")
    assert (v.hf_hub_id, v.weights_file) == ("timm/resnet18.a1_in1k", "model.safetensors")
    assert v.weights_origin == "https://huggingface.co/timm/resnet18.a1_in1k"
    assert v.input_shape == [None, 3, 224, 224]
    assert (
        resolve_source("timm:deit_tiny_patch16_224", "torch").name == "timm:deit_tiny_patch16_224"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "timm:resnet1888",
            "unknown timm model 'resnet1888': not among the 1371 architectures of timm 1.0.31; "
            "did you mean timm:resnet18, timm:resnet18d, timm:skresnet18? see timm.list_models()",
        ),
        (
            "timm:nosuchthing_xyz",
            "unknown timm model 'nosuchthing_xyz': not among the 1371 architectures of timm "
            "1.0.31; see timm.list_models()",
        ),
        (
            "timm:resnet18.tv_in1k",
            "timm:resnet18.tv_in1k names a pretrained tag; the zoo builds each timm architecture "
            "with its default weights (resnet18.a1_in1k); use timm:resnet18, or --weights PATH "
            "to a resnet18 weights file",
        ),
    ],
)
def test_bad_timm_name_is_one_line(name: str, message: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        zoo_model(name)
    assert str(caught.value) == message


def test_timm_errors_for_what_the_zoo_cannot_use() -> None:
    with pytest.raises(ConvdiffError) as caught:
        zoo_model("timm:aimv2_1b_patch14_224")
    assert str(caught.value) == (
        "timm:aimv2_1b_patch14_224 is not a classifier: its pretrained config "
        "aimv2_1b_patch14_224.apple_pt has no classification head (num_classes 0); "
        "pick a timm ImageNet classifier, e.g. timm:resnet18"
    )
    with pytest.raises(ConvdiffError) as caught:
        resolve_source("timm:resnet18", "keras")
    assert str(caught.value) == (
        "zoo model timm:resnet18 is not offered for framework 'keras'; use --src torch"
    )
    with pytest.raises(ConvdiffError) as caught:
        weights_plan("timm:test_coatnet", "torch", "imagenet")  # timm has no weights for it
    assert str(caught.value) == (
        "timm:test_coatnet has no pretrained weights in timm 1.0.31; "
        "pass --weights random or --weights PATH to a weights file"
    )
    plan = weights_plan("timm:test_coatnet", "torch", "auto")
    assert (plan.policy, plan.note) == (
        "random",
        "timm:test_coatnet has no pretrained weights; using seeded random weights, "
        "BatchNorm-calibrated",
    )


@pytest.mark.parametrize(
    ("name", "size", "fraction", "interpolation", "mean", "std"),
    [
        # timm: Resize(floor(224 / 0.95) = 235, bicubic) + CenterCrop(224)
        ("resnet18", 224, 224 / 235, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
        ("convnext_atto", 224, 0.875, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
        ("deit_tiny_patch16_224", 224, 224 / 248, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
        ("mobilenetv3_small_100", 224, 0.875, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
        ("test_resnet", 160, 160 / 168, "bilinear", (0.5,) * 3, (0.5,) * 3),
        ("test_vit", 160, 160 / 168, "bicubic", (0.5,) * 3, (0.5,) * 3),
    ],
)
def test_timm_preprocessing(
    name: str, size: int, fraction: float, interpolation: str, mean: tuple, std: tuple
) -> None:
    spec = zoo_model(f"timm:{name}").variant("torch").preprocess
    assert spec.to_dict() == {
        "size": (size, size),
        "resize": "center-crop",
        "crop_fraction": fraction,
        "mean": mean,
        "std": std,
        "channels": "RGB",
        "layout": "NCHW",
        "name": f"timm-{name}",
        "interpolation": interpolation,
    }


def test_timm_squash_and_pixels() -> None:
    # crop_mode squash at crop_pct 1.0 (e.g. the 384 px CoaT) is a plain resize
    squash = zoo_model("timm:coat_lite_medium_384").variant("torch").preprocess
    assert (squash.resize, squash.crop_fraction) == ("stretch", 1.0)
    spec = zoo_model("timm:resnet18").variant("torch").preprocess
    image = np.full((300, 400, 3), (255, 0, 51), np.uint8)
    x = apply(spec, image)
    assert x.shape == (224, 224, 3)
    rgb = (255, 0, 51)
    expected = [(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert np.allclose(x[100, 100], expected, atol=1e-5)
    # the run prints the interpolation beside the crop
    assert spec.describe() == (
        "timm-resnet18 224x224 center-crop 0.953191 bicubic, "
        "(x/255-[0.485,0.456,0.406])/[0.229,0.224,0.225], RGB, NCHW"
    )


def test_timm_weights_follow_the_hugging_face_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshots = tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots"
    plan = weights_plan("timm:resnet18", "torch", "auto")
    assert (plan.policy, plan.path) == ("random", None)
    assert plan.note == (
        f"ImageNet weights not at hand (model.safetensors is not in {snapshots}/<rev>); "
        "using seeded random weights, BatchNorm-calibrated"
    )
    assert zoo_model("timm:resnet18").variant("torch").missing_weights_fix() == (
        "download model.safetensors from https://huggingface.co/timm/resnet18.a1_in1k and pass "
        f"--weights PATH to it (or let timm cache it in {tmp_path / 'hub'}), or --weights random"
    )
    cached = snapshots / "0123abc" / "model.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    plan = weights_plan("timm:resnet18", "torch", "auto")
    assert (plan.policy, plan.path) == ("imagenet", cached)


def test_bad_timm_name_on_the_command_line() -> None:
    result = CliRunner().invoke(
        cli, ["run", "timm:resnet1888", "--src", "torch", "--dst", "onnx", "--quiet"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown timm model 'resnet1888': not among the 1371 architectures of timm "
        "1.0.31; did you mean timm:resnet18, timm:resnet18d, timm:skresnet18? "
        "see timm.list_models()"
    ]


# -- real timm in workers --------------------------------------------------------------------


@pytest.mark.workers
def test_table_matches_the_installed_timm() -> None:
    """convdiff/data/timm_models.json is what scripts/make_timm_table.py makes of timm today."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_timm_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("timm_models.json: up to date")


@pytest.mark.parametrize(
    ("name", "kwargs", "zeroed", "scales"),
    [
        ("test_resnet", {"zero_init_last": False}, 4, 0),
        ("test_convnext", {"ls_init_value": 1.0}, 0, 9),
        ("resnet18", {"zero_init_last": False}, 8, 0),
        ("convnext_atto", {"ls_init_value": 1.0}, 0, 12),
    ],
)
def test_random_timm_models_undo_the_silent_inits(
    pool: WorkerPool, name: str, kwargs: dict, zeroed: int, scales: int
) -> None:
    """The zoo's random model is exactly timm's with zero_init_last=False / ls_init_value=1."""
    outcome = pool.call(
        "torch", "tests.tiny.timm_funcs:loosened_equals_kwargs", name=name, kwargs=kwargs
    )
    assert ok(outcome) == {"zeroed": zeroed, "scales": scales, "equal": True}


def _assert_not_degenerate(run: Path) -> None:
    """The source's answers differ between images (random weights that mean something): at
    least two top-1 labels, and per-class outputs that move by a tenth of the largest."""
    y = np.load(run / "outputs" / "y-0-torch.npy")  # the run keeps them: --keep-outputs
    assert len(set(y.argmax(1).tolist())) >= 2, y.argmax(1)
    assert np.ptp(y, axis=0).max() > 0.1 * np.abs(y).max()


def _run(tmp_path: Path, model: str, *extra: str) -> tuple[int, dict, str]:
    argv = [
        "run",
        model,
        "--src",
        "torch",
        "--dst",
        "onnx",
        "--limit",
        "4",
        "--quiet",
        "--keep-outputs",
    ]
    argv += ["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), *extra]
    result = CliRunner().invoke(cli, argv)
    report_file = tmp_path / "run" / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return result.exit_code, report, result.stderr


@pytest.mark.workers
@pytest.mark.parametrize(
    ("model", "detail"),
    [
        (
            "timm:test_vit",
            "random (torch.manual_seed(0)), 0 BatchNorm layers; timm inits undone: "
            "0 zero-initialized norm weights and 0 layer scales set to 1",
        ),
        (
            "timm:test_resnet",
            "random (torch.manual_seed(0)), 15 BatchNorm layers; timm inits undone: "
            "4 zero-initialized norm weights and 0 layer scales set to 1",
        ),
    ],
)
def test_cli_run_timm_torch_to_onnx(tmp_path: Path, model: str, detail: str) -> None:
    code, report, stderr = _run(tmp_path, model, "--weights", "random")
    assert (code, stderr) == (0, "")
    assert (report["model"], report["src"], report["dst"]) == (model, "torch", "onnx")
    assert report["route"] == ["torch", "onnx"]
    assert report["status"] == "ok"
    assert report["weights"] == {
        "policy": "random",
        "weights": "random",
        "weights_detail": detail,
        "note": "seeded random weights, BatchNorm-calibrated; "
        "BatchNorm statistics calibrated on 16 images from calibration.npz",
    }
    assert report["preprocessing"]["name"] == f"timm-{model.removeprefix('timm:')}"
    assert report["preprocessing"]["size"] == [160, 160]
    assert report["images"] == 4
    assert report["top1_discrepancy"] == 0.0
    assert report["chain"][0]["artifact"]["path"].endswith(".onnx")
    _assert_not_degenerate(tmp_path / "run")


@pytest.mark.workers
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_weights_file(pool: WorkerPool, tmp_path: Path, suffix: str) -> None:
    """--weights PATH loads a local state dict: a model saved with seed 7 is rebuilt exactly."""
    task = "tests.tiny.timm_funcs:save_state_dict"
    weights = str(tmp_path / f"test_vit{suffix}")
    ok(pool.call("torch", task, name="test_vit", path=weights, seed=7))
    built = ok(client.build(pool, "timm:test_vit", "torch", weights, 0, None, tmp_path / "a"))
    assert (built["weights"], built["weights_detail"]) == ("file", f"weights file {weights}")
    seeded = ok(client.build(pool, "timm:test_vit", "torch", "random", 7, None, tmp_path / "b"))
    x = np.random.default_rng(0).normal(size=(2, 160, 160, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    y_file = infer(
        pool, "torch", built["path"], tmp_path / "x.npz", tmp_path / "a.npz", layout="NCHW"
    )
    y_seed = infer(
        pool, "torch", seeded["path"], tmp_path / "x.npz", tmp_path / "b.npz", layout="NCHW"
    )
    assert np.array_equal(y_file, y_seed)  # no BatchNorm in test_vit: calibration changes nothing


@pytest.mark.workers
def test_cached_timm_weights_are_used(
    pool: WorkerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--weights auto takes timm's weights from the Hugging Face cache (here: a seeded model
    put where timm would have downloaded test_vit.r160_in1k), through timm's own loader."""
    cache = tmp_path / "hub"
    task = "tests.tiny.timm_funcs:fake_hub_cache"
    hub_id = "timm/test_vit.r160_in1k"
    cached = ok(pool.call("torch", task, name="test_vit", hub_id=hub_id, cache=str(cache), seed=7))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # the run's workers inherit it
    code, report, stderr = _run(tmp_path, "timm:test_vit")
    assert (code, stderr) == (0, "")
    assert report["weights"] == {
        "policy": "auto",
        "weights": "imagenet",
        "weights_detail": f"ImageNet weights ({cached})",
        "note": "",
    }
    assert report["top1_discrepancy"] == 0.0
    _assert_not_degenerate(tmp_path / "run")


@pytest.mark.workers
def test_missing_timm_weights_name_the_file(tmp_path: Path) -> None:
    """No internet here: --weights imagenet fails at once and says what to download."""
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    with WorkerPool(tmp_path / "logs", timeout=300, extra_env=env) as own:
        outcome = client.build(own, "timm:test_vit", "torch", "imagenet", 0, None, tmp_path / "o")
    assert not outcome
    assert outcome.error_type == "ConvdiffError"
    assert outcome.message == (
        "ImageNet weights for timm:test_vit are not cached and could not be downloaded "
        "(gaierror); download model.safetensors from https://huggingface.co/timm/"
        "test_vit.r160_in1k and pass --weights PATH to it (or let timm cache it in "
        f"{tmp_path / 'hub'}), or --weights random"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "exporter",
    [["--torch-exporter", "dynamo"], ["--torch-exporter", "torchscript", "--opset", "17"]],
)
def test_cli_run_convnext_atto_torch_to_onnx(tmp_path: Path, exporter: list[str]) -> None:
    """A real timm architecture (ConvNeXt, layer scales set to 1) through both torch.onnx
    exporters (their ConvNeXt graphs differ a lot; both must agree with the source)."""
    code, report, stderr = _run(tmp_path, "timm:convnext_atto", "--weights", "random", *exporter)
    assert (code, stderr) == (0, "")
    assert report["route"] == ["torch", "onnx"]
    assert report["chain"][0]["options"]["torch_exporter"] == exporter[1]
    _assert_not_degenerate(tmp_path / "run")
    assert report["weights"]["weights_detail"] == (
        "random (torch.manual_seed(0)), 0 BatchNorm layers; timm inits undone: "
        "0 zero-initialized norm weights and 12 layer scales set to 1"
    )
    assert report["top1_discrepancy"] == 0.0
    assert report["max_abs_diff"] < 1e-4


def test_timm_names_in_a_check_config(tmp_path: Path) -> None:
    from convdiff.commands.check.config import CheckConfigError, ConfigIssue, load_check_config

    (tmp_path / "c.toml").write_text(
        '[[conversion]]\nmodel = "timm:test_vit"\nsrc = "torch"\ndst = "onnx"\nweights = "random"\n'
    )
    (entry,) = load_check_config(tmp_path / "c.toml").entries
    assert (entry.name, entry.run.model, entry.run.src) == (
        "timm-test_vit-torch-onnx",
        "timm:test_vit",
        "torch",
    )
    (tmp_path / "bad.toml").write_text(
        '[[conversion]]\nmodel = "timm:test_vitt"\nsrc = "torch"\ndst = "onnx"\n'
    )
    with pytest.raises(CheckConfigError) as caught:
        load_check_config(tmp_path / "bad.toml")
    assert caught.value.issues == [
        ConfigIssue(
            2,
            "unknown timm model 'test_vitt': not among the 1371 architectures of timm 1.0.31",
            "did you mean timm:test_vit, timm:test_vit4, timm:test_vit3? see timm.list_models()",
        )
    ]


def test_timm_names_in_a_table_plan() -> None:
    from convdiff.commands.table.flow import _cells, plan
    from convdiff.commands.table.types import TableConfig

    blocks = plan(TableConfig(models=("timm:test_vit",), frameworks=("torch", "onnx")))
    assert [(b.name, b.kind, b.sources) for b in blocks] == [("timm:test_vit", "zoo", ("torch",))]
    config = TableConfig(models=("timm:test_vit",), frameworks=("torch", "onnx"))
    assert [c.run_dir for c in _cells(config, blocks)] == ["cells/timm-test_vit/torch-onnx"]


def test_timm_weights_without_the_hub_use_torch_hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A few timm weights only have a legacy URL: timm's loader caches them like torch.hub."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    v = zoo_model("timm:legacy_seresnet18").variant("torch")
    assert (v.hf_hub_id, v.weights_file) == ("", "seresnet18-4bb0ce65.pth")
    assert v.weights_origin == (
        "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
    )
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "seresnet18-4bb0ce65.pth"
    assert weights_plan("timm:legacy_seresnet18", "torch", "auto").policy == "random"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    plan = weights_plan("timm:legacy_seresnet18", "torch", "auto")
    assert (plan.policy, plan.path) == ("imagenet", cached)


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "test_resnet"])
def test_timm_spec_equals_timms_transform_bit_for_bit(
    pool: WorkerPool, tmp_path: Path, name: str
) -> None:
    """The zoo's spec for timm:<name> gives exactly the pixels of timm's eval transform
    (bicubic or bilinear Resize(floor(size / crop_pct)), CenterCrop, Normalize) on the sample
    set's photos, whatever their shapes."""
    from convdiff.inputs import data, preprocess

    records = data.sample_set()
    task = "tests.tiny.timm_funcs:timm_eval_batch"
    paths = [r.path for r in records]
    steps = ok(pool.call("torch", task, name=name, paths=paths, out=str(tmp_path / "t.npy")))
    spec = zoo_model(f"timm:{name}").variant("torch").preprocess
    assert steps[0].startswith(f"Resize(size={int(spec.size[0] / spec.crop_fraction + 0.5)}, ")
    assert f"interpolation={spec.interpolation}" in steps[0]
    np.testing.assert_array_equal(preprocess.batch(spec, records), np.load(tmp_path / "t.npy"))
