"""`convdiff check` end to end: real conversions of tiny ONNX models written in the test, the
first images of the sample set, real workers. Plus the verdict and exit-code rules on
hand-made reports, and the JUnit file read back with ElementTree."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdiff.cli import cli
from convdiff.commands.check.config import CheckEntry
from convdiff.commands.check.flow import judge
from convdiff.commands.check.junit import JUnitCase, junit_tree
from convdiff.commands.check.render import entry_line, summary
from convdiff.commands.check.types import CheckResult, EntryResult
from convdiff.commands.run.types import Crash, RunConfig, RunReport
from tests.helpers import ROOT

REDUCE18 = (
    "convert onnx2torch: Converter is not implemented (OperationDescription(domain='', "
    "operation_type='ReduceMean', version=18))"
)
SUMMARY = re.compile(r"^(.*) in \d+ s \(run folders in (.*)\)$")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path, reduce18_onnx: Path) -> Path:
    """A project folder with the two tiny models; configs are written next to them."""
    folder = tmp_path_factory.mktemp("project")
    shutil.copy(tiny_onnx, folder / "tiny.onnx")
    shutil.copy(reduce18_onnx, folder / "reduce18.onnx")
    (folder / "broken.onnx").write_bytes(b"\x08\x07this is not a protobuf model")
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def check(project: Path, cache: Path, out: Path, config: str, *extra: str):
    (project / f"{out.name}.toml").write_text(config)
    args = ["check", str(project / f"{out.name}.toml"), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--cache-dir", str(cache), "--quiet", *extra])
    lines = result.stdout.splitlines()
    summary = SUMMARY.match(lines[-1])
    assert summary, result.stdout + result.stderr
    assert summary.group(2) == str(out.resolve())
    assert "Traceback" not in result.stderr
    return result.exit_code, lines[:-1], summary.group(1), result.stderr


def figure(out: Path, name: str, key: str) -> float:
    return json.loads((out / name / "report.json").read_text())[key]


TINY = '[[conversion]]\nmodel = "tiny.onnx"\ndst = "torch"\nlimit = 4\n'


@pytest.mark.workers
def test_mixed_check_lines_exit_code_and_junit(project: Path, cache: Path, tmp_path: Path) -> None:
    out, junit = tmp_path / "mixed", tmp_path / "ci" / "results.xml"
    config = (
        "[defaults]\nlimit = 4\n\n"
        + TINY
        + '\n[[conversion]]\nname = "tiny-exact"\nmodel = "tiny.onnx"\ndst = "torch"\n'
        "max_abs_diff = 0.0\n\n"
        '[[conversion]]\nmodel = "reduce18.onnx"\ndst = "torch"\n\n'
        '[[conversion]]\nname = "reduce18-known"\nmodel = "reduce18.onnx"\ndst = "torch"\n'
        "allow_crash = true\n"
    )
    code, lines, counts, _ = check(project, cache, out, config, "--junit", str(junit))
    diff = figure(out, "tiny-onnx-torch", "max_abs_diff")
    # onnx2torch's float32 result differs from onnxruntime's by rounding: small, not zero
    assert 0 < diff < 1e-5
    assert figure(out, "tiny-exact", "max_abs_diff") == diff  # the same cached conversion
    assert lines == [
        f"PASS tiny-onnx-torch  top-1 0.0% <= 0%  max|diff| {diff:.3g}",
        f"FAIL tiny-exact  max|diff| {diff:.3g} > 0",
        f"CRASH reduce18-onnx-torch  {REDUCE18}",
        f"XFAIL reduce18-known  {REDUCE18}  (allowed by allow_crash)",
    ]
    assert counts == "1 passed, 1 failed, 1 crashed, 1 allowed crash"
    assert code == 3  # a crash wins over a failed threshold

    root = ET.parse(junit).getroot()
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "convdiff"
    for node in (root, suite):
        assert [node.get(k) for k in ("tests", "failures", "errors", "skipped")] == [
            "4",
            "1",
            "1",
            "1",
        ]
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("convdiff.check", "tiny-onnx-torch"),
        ("convdiff.check", "tiny-exact"),
        ("convdiff.check", "reduce18-onnx-torch"),
        ("convdiff.check", "reduce18-known"),
    ]
    assert all(float(c.get("time")) > 0 for c in cases)
    assert [[child.tag for child in c] for c in cases] == [
        ["system-out"],
        ["failure", "system-out"],
        ["error", "system-out"],
        ["skipped", "system-out"],
    ]
    failure = cases[1].find("failure")
    assert failure.get("message") == f"max abs diff {diff:.3g} > 0"
    assert failure.text.splitlines()[:2] == [
        "top-1 discrepancy: 0.0% (allowed 0%)",
        f"max abs diff: {diff:.3g} (allowed: 0.0)",
    ]
    assert cases[2].find("error").get("message") == REDUCE18
    assert cases[2].find("error").get("type") == "crash"
    assert cases[3].find("skipped").get("message") == f"crash allowed by allow_crash: {REDUCE18}"
    report = out.resolve() / "tiny-exact" / "report.json"
    assert cases[1].find("system-out").text == f"report: {report}"

    saved = json.loads((out / "check.json").read_text())
    assert saved["exit_code"] == 3
    assert saved["counts"] == {"pass": 1, "fail": 1, "crash": 1, "xfail": 1, "error": 0}
    assert [e["verdict"] for e in saved["entries"]] == ["pass", "fail", "crash", "xfail"]


@pytest.mark.workers
def test_passing_check_and_allowed_crash_exit_0(project: Path, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "passing"
    config = (
        TINY + '\n[[conversion]]\nmodel = "reduce18.onnx"\ndst = "torch"\nlimit = 2\n'
        "allow_crash = true\nmax_top1_discrepancy = 5\n"
    )
    code, lines, counts, stderr = check(project, cache, out, config)
    diff = figure(out, "tiny-onnx-torch", "max_abs_diff")
    assert lines == [
        f"PASS tiny-onnx-torch  top-1 0.0% <= 0%  max|diff| {diff:.3g}",
        f"XFAIL reduce18-onnx-torch  {REDUCE18}  (allowed by allow_crash)",
    ]
    assert counts == "1 passed, 0 failed, 0 crashed, 1 allowed crash"
    assert (code, stderr) == (0, "")


@pytest.mark.workers
def test_threshold_exceeded_exit_1(project: Path, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "failing"
    code, lines, counts, _ = check(project, cache, out, TINY + "max_abs_diff = 0.0\n")
    diff = figure(out, "tiny-onnx-torch", "max_abs_diff")
    assert diff > 0
    assert lines == [f"FAIL tiny-onnx-torch  max|diff| {diff:.3g} > 0"]
    assert counts == "0 passed, 1 failed, 0 crashed"
    assert code == 1


@pytest.mark.workers
def test_entry_error_is_a_line_not_a_traceback_and_the_others_still_run(
    project: Path, cache: Path, tmp_path: Path
) -> None:
    out, junit = tmp_path / "erroring", tmp_path / "results.xml"
    config = '[[conversion]]\nmodel = "broken.onnx"\ndst = "torch"\nlimit = 2\n\n' + TINY
    code, lines, counts, _ = check(project, cache, out, config, "--junit", str(junit))
    diff = figure(out, "tiny-onnx-torch", "max_abs_diff")
    assert len(lines) == 2
    assert lines[0].startswith(
        "ERROR broken-onnx-torch  cannot load broken.onnx as a ONNX (onnxruntime) model: "
    )
    assert lines[1] == f"PASS tiny-onnx-torch  top-1 0.0% <= 0%  max|diff| {diff:.3g}"
    assert counts == "1 passed, 0 failed, 0 crashed, 1 error"
    assert code == 2
    suite = ET.parse(junit).getroot().find("testsuite")
    assert [suite.get(k) for k in ("tests", "failures", "errors", "skipped")] == [
        "2",
        "0",
        "1",
        "0",
    ]
    error = suite.find("testcase").find("error")
    assert (error.get("type"), error.get("message")) == ("ConvdiffError", lines[0][25:])


# --- rules on hand-made results (no run) -----------------------------------------------------


def _entry(**kw: object) -> CheckEntry:
    top1 = kw.pop("max_top1", 0.0)
    return CheckEntry(name="e", run=RunConfig(model="m", max_discrepancy=top1), **kw)


def _report(status: str, top1: float | None, diff: float | None, **kw: object) -> RunReport:
    return RunReport(
        model="m",
        src="onnx",
        dst="torch",
        status=status,
        out_dir="/runs/e",
        top1_discrepancy=top1,
        max_abs_diff=diff,
        **kw,
    )


@pytest.mark.parametrize(
    ("entry", "report", "verdict", "line"),
    [
        (
            _entry(),
            _report("ok", 0.0, 2.1e-6),
            "pass",
            "PASS e  top-1 0.0% <= 0%  max|diff| 2.1e-06",
        ),
        (
            _entry(max_top1=5.0),
            _report("discrepancy", 31.25, 0.5),
            "fail",
            "FAIL e  top-1 31.2% > 5%",
        ),
        (
            _entry(max_top1=50.0, max_abs_diff=0.1),
            _report("ok", 31.25, 0.5),
            "fail",
            "FAIL e  max|diff| 0.5 > 0.1",
        ),
        (
            _entry(max_abs_diff=1e-4),
            _report("discrepancy", 6.25, 0.5),
            "fail",
            "FAIL e  top-1 6.2% > 0%  max|diff| 0.5 > 0.0001",
        ),
        (
            _entry(max_abs_diff=1e-4),
            _report("ok", 0.0, float("nan")),
            "fail",
            "FAIL e  max|diff| nan > 0.0001",
        ),
        (
            _entry(max_abs_diff=1e-4),
            _report("ok", 0.0, 1e-5),
            "pass",
            "PASS e  top-1 0.0% <= 0%  max|diff| 1e-05 <= 0.0001",
        ),
        (
            _entry(),
            _report(
                "crash",
                None,
                None,
                crashes=[Crash("convert", "tf2onnx", "1.17", "KeyError: 'x'\n  more\n")],
            ),
            "crash",
            "CRASH e  convert tf2onnx: KeyError: 'x'",
        ),
        (
            _entry(),
            _report("incomplete", None, None),
            "crash",
            "CRASH e  incomplete: the run stopped before the end",
        ),
    ],
)
def test_judge(entry: CheckEntry, report: RunReport, verdict: str, line: str) -> None:
    result = judge(entry, report, 1.0)
    assert (result.verdict, entry_line(result)) == (verdict, line)
    assert result.report == "/runs/e/report.json"


def _result(*verdicts: str) -> CheckResult:
    entries = [EntryResult(f"e{i}", v, "", 1.0, "") for i, v in enumerate(verdicts)]
    return CheckResult(config="c.toml", out_dir="/o", entries=entries, seconds=74.4)


@pytest.mark.parametrize(
    ("verdicts", "code"),
    [
        (("pass", "xfail"), 0),
        (("pass", "fail"), 1),
        (("fail", "crash"), 3),
        (("crash", "error", "fail"), 2),
        ((), 0),
    ],
)
def test_exit_code_worst_wins(verdicts: tuple[str, ...], code: int) -> None:
    result = _result(*verdicts)
    assert result.exit_code == code
    assert bool(result) is (code == 0)


def test_summary_line() -> None:
    assert summary(_result("pass", "pass", "pass", "fail")) == (
        "3 passed, 1 failed, 0 crashed in 74 s (run folders in /o)"
    )
    assert summary(_result("xfail", "xfail", "error", "error", "crash")) == (
        "0 passed, 0 failed, 1 crashed, 2 allowed crashes, 2 errors in 74 s (run folders in /o)"
    )


def test_junit_counts_and_escaping(tmp_path: Path) -> None:
    cases = [
        JUnitCase("a", "k", 0.5),
        JUnitCase("b <&>", "k", 1.25, "failure", 'top-1 "31.2%" > 5.0%', "threshold", "x\ny"),
        JUnitCase("c", "k", 0.25, "error", "boom", stdout="report: r.json"),
    ]
    path = tmp_path / "r.xml"
    junit_tree("convdiff", cases).write(path, encoding="utf-8", xml_declaration=True)
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite.attrib == {
        "name": "convdiff",
        "tests": "3",
        "failures": "1",
        "errors": "1",
        "skipped": "0",
        "time": "2.000",
    }
    failure = suite.findall("testcase")[1].find("failure")
    assert suite.findall("testcase")[1].get("name") == "b <&>"
    assert (failure.get("message"), failure.text) == ('top-1 "31.2%" > 5.0%', "x\ny")
    with pytest.raises(ValueError, match="unknown outcome 'xfail'"):
        JUnitCase("d", "k", 0.0, "xfail")


# --- the example config (real architectures) ------------------------------------------------


# -- --localize ---------------------------------------------------------------------------------

# TFLite dynamic-range quantization stores the 48-filter convolution's kernel in int8: the one
# weight that lost precision, named as the two files name it (BatchNorm is folded into the conv).
QUANT_FINDING = (
    "weights precision at conv -> tiny_cnn_1/relu_1/Relu;"
    "tiny_cnn_1/bn_1/batchnorm/add_1;tiny_cnn_1/conv_1/convolution;"
    "tiny_cnn_1/bn_1/batchnorm/sub1: conv2d weight: precision lost: int8 in the target file "
    "(per-channel scales) (max abs 0.000786, max rel 0.00391)"
)
QUANT = (
    '[[conversion]]\nname = "quant"\nmodel = "k/model.keras"\ndst = "tflite"\n'
    'tflite_opt = "dynamic-range"\nlimit = 4\nmax_abs_diff = 0.0\n'
)


def test_localize_names_the_quantized_conv_on_the_fail_line_and_in_junit(
    keras_cnn_q: dict[str, str], project: Path, cache: Path, tmp_path: Path
) -> None:
    (project / "k").mkdir()
    shutil.copy(keras_cnn_q["keras"], project / "k" / "model.keras")
    out, junit = tmp_path / "quant", tmp_path / "results.xml"
    code, lines, counts, _ = check(project, cache, out, QUANT, "--localize", "--junit", str(junit))
    diff = figure(out, "quant", "max_abs_diff")
    assert 0 < diff < 1e-2
    assert (code, counts) == (1, "0 passed, 1 failed, 0 crashed")
    assert lines == [f"FAIL quant  max|diff| {diff:.3g} > 0  | {QUANT_FINDING}"]
    written = json.loads((out / "quant" / "localize" / "report.json").read_text())
    assert [(f["stage"], f["kind"]) for f in written["findings"]] == [("weights", "precision")]
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure.get("message") == f"max abs diff {diff:.3g} > 0  | {QUANT_FINDING}"
    check_json = json.loads((out / "check.json").read_text())
    assert check_json["entries"][0]["top_finding"] == QUANT_FINDING
    # without --localize: the same verdict, no localization
    code, lines, _, _ = check(project, cache, tmp_path / "plain", QUANT)
    assert (code, lines) == (1, [f"FAIL quant  max|diff| {diff:.3g} > 0"])
    assert not (tmp_path / "plain" / "quant" / "localize").exists()


@pytest.mark.workers
def test_a_failing_localization_never_turns_a_fail_into_a_crash(
    project: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import convdiff.commands.followup

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(convdiff.commands.followup, "localize", broken)
    config = (
        TINY
        + 'name = "tiny-exact"\nmax_abs_diff = 0.0\n\n'
        + TINY.replace("[[conversion]]", '[[conversion]]\nname = "tiny-loose"')
    )
    code, lines, counts, _ = check(project, cache, tmp_path / "out", config, "--localize")
    diff = figure(tmp_path / "out", "tiny-exact", "max_abs_diff")
    assert (code, counts) == (1, "1 passed, 1 failed, 0 crashed")
    assert lines == [
        f"FAIL tiny-exact  max|diff| {diff:.3g} > 0  | localize failed: boom",
        f"PASS tiny-loose  top-1 0.0% <= 0%  max|diff| {diff:.3g}",  # a PASS is not localized
    ]


@pytest.mark.slow
def test_example_config_passes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "check",
            str(ROOT / "models" / "example-convdiff.toml"),
            "--out",
            str(tmp_path / "check"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--junit",
            str(tmp_path / "results.xml"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    folder = tmp_path / "check"
    lite0 = json.loads((folder / "lite0-torch-onnx" / "report.json").read_text())
    quant = json.loads(
        (folder / "mobilenetv2-keras-tflite-dynamic-range" / "report.json").read_text()
    )
    assert (lite0["weights"]["weights"], lite0["images"], lite0["top1_discrepancy"]) == (
        "imagenet",
        16,
        0.0,
    )
    assert (quant["weights"]["weights"], quant["chain"][0]["options"]) == (
        "random",
        {"tflite_opt": "dynamic-range", "tflite_io": "float"},
    )
    *lines, summary = result.stdout.splitlines()
    assert lines == [
        f"PASS lite0-torch-onnx  top-1 0.0% <= 0%  max|diff| {lite0['max_abs_diff']:.3g} <= 0.0001",
        f"PASS mobilenetv2-keras-tflite-dynamic-range  top-1 {quant['top1_discrepancy']:.1f}% "
        f"<= 25%  max|diff| {quant['max_abs_diff']:.3g}",
    ]
    assert SUMMARY.match(summary).group(1) == "2 passed, 0 failed, 0 crashed"
    suite = ET.parse(tmp_path / "results.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
