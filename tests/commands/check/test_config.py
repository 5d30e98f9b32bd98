"""The check config: every kind of mistake is one exact line with its line number, exit 2,
and nothing runs (no check folder, no cache, no worker). No framework is involved here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.check.config import (
    CheckConfigError,
    ConfigIssue,
    load_check_config,
    locate,
)
from convdiff.core.options import ConvertOptions


@pytest.fixture()
def folder(tmp_path: Path, tiny_onnx: Path) -> Path:
    """A project folder with a tiny ONNX model next to where the config goes."""
    shutil.copy(tiny_onnx, tmp_path / "tiny.onnx")
    return tmp_path


def check(folder: Path, text: str) -> tuple[int, str, str]:
    """Write ``convdiff.toml`` and run ``convdiff check`` on it from inside the folder."""
    (folder / "convdiff.toml").write_text(text)
    config, cache = folder / "convdiff.toml", folder / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the default check folder would be ./convdiff-check
        result = CliRunner().invoke(cli, ["check", str(config), "--cache-dir", str(cache)])
    ran = (folder / "convdiff-check").exists() or cache.exists()
    assert not ran, "a check folder or cache was created: something ran"
    return result.exit_code, result.stdout, result.stderr


CASES = [
    (
        "unknown key, suggested",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\ntflite_opts = "none"\n',
        ['4: unknown key "tflite_opts" in [[conversion]] #1; did you mean "tflite_opt"?'],
    ),
    (
        "unknown key in defaults, nothing close",
        '[defaults]\nverbose = true\n\n[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\n',
        [
            '2: unknown key "verbose" in [defaults]; valid keys: model, src, dst, via, '
            "tflite_opt, opset, torch_exporter, tflite_io, ort_quant, converters, tool_versions, "
            "weights, seed, data, labels, limit, sample, preprocess, "
            "input_size, mean, std, layout, resize, max_top1_discrepancy, max_abs_diff, "
            "allow_crash, trust_model_code"
        ],
    ),
    (
        "unknown table",
        '[conversions]\nmodel = "tiny.onnx"\n',
        [
            '1: unknown key "conversions" in the file; did you mean "conversion"?',
            '1: no [[conversion]] entry; add one: [[conversion]] with model = "efficientnet_lite0",'
            ' src = "torch", dst = "onnx"',
        ],
    ),
    (
        "wrong type",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nlimit = "4"\n',
        ['4: limit must be an integer, got "4"; use an integer >= 1'],
    ),
    (
        "a sample below one",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nsample = 0\n',
        ["4: sample = 0 is out of range; use an integer >= 1"],
    ),
    (
        "a boolean is not an integer",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nseed = true\n',
        ["4: seed must be an integer, got true; use an integer >= 0"],
    ),
    (
        "bad choice",
        '[[conversion]]\nmodel = "mobilenetv2"\nsrc = "keras"\ndst = "tflite"\n'
        'tflite_opt = "int4"\n',
        ['5: tflite_opt = "int4" is not accepted; use one of: none, dynamic-range, float16, int8'],
    ),
    (
        "unknown framework",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "caffe"\n',
        ['3: dst = "caffe" is not accepted; use one of: keras, tf, tflite, onnx, torch'],
    ),
    (
        "negative threshold in defaults, and a missing dst",
        '[defaults]\nmax_top1_discrepancy = -1\n\n[[conversion]]\nmodel = "tiny.onnx"\n\n'
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nmax_abs_diff = -0.5\n',
        [
            "2: max_top1_discrepancy = -1 is out of range; use a percentage from 0 to 100",
            "4: [[conversion]] #1 has no dst; add dst = "
            '"onnx" (one of: keras, tf, tflite, onnx, torch)',
            "10: max_abs_diff = -0.5 is out of range; use a number >= 0",
        ],
    ),
    (
        "missing model",
        '[[conversion]]\ndst = "torch"\n',
        ['1: [[conversion]] #1 has no model; add model = "<zoo name or model file>"'],
    ),
    (
        "zoo model without src, and one not offered for src",
        '[[conversion]]\nmodel = "mobilenetv2"\ndst = "tflite"\n\n'
        '[[conversion]]\nmodel = "efficientnet_lite0"\nsrc = "keras"\ndst = "tflite"\n',
        [
            '2: zoo model mobilenetv2 needs src; add src = "keras" (offered for: keras, tf, torch)',
            '7: zoo model efficientnet_lite0 is not offered for src = "keras"; use one of: torch',
        ],
    ),
    (
        "source and target the same",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "onnx"\n',
        ["3: source and target are both onnx; set a different dst"],
    ),
    (
        "preprocessing for a zoo model, weights for a file",
        '[[conversion]]\nmodel = "mobilenetv2"\nsrc = "keras"\ndst = "tflite"\n'
        "input_size = [224, 224]\n\n"
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nweights = "random"\n',
        [
            "5: input_size applies to model files only; remove it: zoo model mobilenetv2 brings "
            "its own preprocessing",
            "10: weights applies to zoo models only; remove it: a model file brings its own "
            "weights",
        ],
    ),
    (
        "duplicate default names",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\n\n'
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nopset = 17\n',
        [
            '5: duplicate name "tiny-onnx-torch" (the entry at line 1 has it too); '
            "give each [[conversion]] its own name = ..."
        ],
    ),
    (
        "input size and mean",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\ninput_size = [16]\n'
        "mean = [123.68, 116.78, 103.94]\nstd = [0.2, 0, 0.2]\n",
        [
            "4: input_size must be 2 positive integers [H, W], got [16]; "
            "write e.g. input_size = [224, 224]",
            "5: mean = [123.68, 116.78, 103.94] is not in units of pixel/255; "
            "divide by 255 (e.g. 123.68 -> 0.485)",
            "6: std = [0.2, 0, 0.2] must be positive; write e.g. std = [0.229, 0.224, 0.225] "
            "(R, G, B in units of pixel/255)",
        ],
    ),
    (
        "name in defaults",
        '[defaults]\nname = "x"\n\n[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\n',
        ["2: name cannot be a default; set name in each [[conversion]]"],
    ),
    (
        "single brackets",
        '[conversion]\nmodel = "tiny.onnx"\ndst = "torch"\n',
        [
            "1: conversion must be a list of tables; start each entry with its own [[conversion]] "
            "line (double brackets)"
        ],
    ),
    (
        "TOML syntax error",
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = torch\n',
        ["3: invalid TOML: Invalid value (column 7); fix the syntax of this line"],
    ),
]


@pytest.mark.parametrize(("text", "lines"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_error_lines(folder: Path, text: str, lines: list[str]) -> None:
    code, stdout, stderr = check(folder, text)
    assert code == 2
    assert stdout == ""
    config = folder / "convdiff.toml"
    assert stderr.splitlines() == [f"error: {config}:{line}" for line in lines]


def test_missing_files_are_named_with_the_folder_they_were_looked_for_in(folder: Path) -> None:
    code, _, stderr = check(
        folder,
        '[[conversion]]\nmodel = "nets/missing.onnx"\ndst = "torch"\n\n'
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nname = "with-data"\n'
        'data = "images"\nlabels = "labels.txt"\n\n'
        '[[conversion]]\nmodel = "mobilenetv2"\nsrc = "keras"\ndst = "tflite"\n'
        'weights = "w.h5"\n',
    )
    assert code == 2
    config = folder / "convdiff.toml"
    assert stderr.splitlines() == [
        f'error: {config}:2: model = "nets/missing.onnx" is neither a zoo model nor an existing '
        f"file (looked for {folder / 'nets/missing.onnx'}); use a zoo name (mobilenetv2, "
        "resnet101, inceptionv3, convnext_tiny, efficientnetv2_b0, efficientnet_lite0, "
        "timm:<any timm model>) or a path relative to the config file",
        f'error: {config}:9: data = "images" is not a folder (looked for {folder / "images"}); '
        "give an image folder relative to the config file, or remove data to use the embedded "
        "sample set",
        f'error: {config}:10: labels = "labels.txt" is not a file (looked for '
        f"{folder / 'labels.txt'}); give a labels file relative to the config file",
        f"error: {config}:16: weights file w.h5 does not exist (looked for {folder / 'w.h5'}); "
        "give an existing file (relative to the config file) or auto, imagenet, random",
    ]


def test_missing_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr == f"error: config file {tmp_path / 'nope.toml'} does not exist; " + (
        "check the path\n"
    )


def test_defaults_apply_unless_the_entry_sets_the_key(folder: Path) -> None:
    (folder / "images").mkdir()
    (folder / "c.toml").write_text(
        "[defaults]\nlimit = 4\nmax_top1_discrepancy = 5\nlayout = 'nchw'\n\n"
        '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\n\n'
        '[[conversion]]\nname = "to-keras"\nmodel = "tiny.onnx"\ndst = "keras"\nlimit = 2\n'
        'data = "images"\nmax_abs_diff = 1e-4\nallow_crash = true\n\n'
        '[[conversion]]\nmodel = "mobilenetv2"\nsrc = "keras"\ndst = "tflite"\n'
        'tflite_opt = "dynamic-range"\nweights = "random"\nseed = 3\nsample = 50\n'
    )
    config = load_check_config(folder / "c.toml")
    first, second, third = config.entries
    assert (first.name, first.line, first.run.model) == (
        "tiny-onnx-torch",
        6,
        str(folder / "tiny.onnx"),
    )
    assert (first.run.src, first.run.dst, first.run.limit, first.run.layout) == (
        "onnx",
        "torch",
        4,
        "NCHW",
    )
    assert (first.max_top1_discrepancy, first.max_abs_diff, first.allow_crash) == (5.0, None, False)
    assert (second.name, second.run.limit, second.run.data) == ("to-keras", 2, folder / "images")
    assert (second.max_abs_diff, second.allow_crash) == (1e-4, True)
    assert (third.name, third.run.model, third.run.weights, third.run.seed) == (
        "mobilenetv2-keras-tflite",
        "mobilenetv2",
        "random",
        3,
    )
    assert (third.run.sample, first.run.sample) == (50, None)
    assert third.run.convert == ConvertOptions(tflite_opt="dynamic-range")
    assert third.run.layout == "NCHW"  # a default; the run ignores it for zoo models


def test_error_object_holds_every_issue(folder: Path) -> None:
    (folder / "c.toml").write_text('[[conversion]]\nmodel = 3\ndst = "torch"\nlimit = 0\n')
    with pytest.raises(CheckConfigError) as caught:
        load_check_config(folder / "c.toml", shown_path="c.toml")
    assert caught.value.issues == [
        ConfigIssue(
            2, "model must be a non-empty string, got 3", 'write model = "<zoo name or model file>"'
        ),
        ConfigIssue(4, "limit = 0 is out of range", "use an integer >= 1"),
    ]
    assert str(caught.value) == "c.toml:2: model must be a non-empty string, got 3; " + (
        'write model = "<zoo name or model file>"'
    )


def test_locate_finds_tables_and_keys() -> None:
    text = (
        "# a comment\n[defaults]\nlimit = 4\n\n[[conversion]]\nmodel = 'a'\n"
        '"dst" = "onnx"\n[[conversion]]\n  model = "b"\nmean = [\n  0.5,\n  0.5, 0.5]\n'
    )
    where = locate(text)
    assert where.table(("defaults",)) == 2
    assert (where.table(("conversion", 0)), where.table(("conversion", 1))) == (5, 8)
    assert where.key(("defaults",), "limit") == 3
    assert where.key(("conversion", 0), "dst") == 7
    assert where.key(("conversion", 1), "model") == 9
    assert where.key(("conversion", 1), "mean") == 10
    assert where.key(("conversion", 1), "std") == 8  # not written: the table's line
