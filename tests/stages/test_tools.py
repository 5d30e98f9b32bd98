"""The tools stage's judgements on hand-made evidence: which runtime, converter or hop is to
blame (the runs that gather the evidence: tests/commands/localize/test_inputs_tools.py)."""

from __future__ import annotations

from convdiff.commands.run.types import Crash
from convdiff.stages.tools import hop_findings, runtime_findings


def _evidence(native_vs_tvm: dict, **extra: object) -> dict:
    far = {"images": 16, "top1_discrepancy": 12.5, "max_abs_diff": 0.2}
    return {
        "runtime": "TFLite (LiteRT)", "runtime_version": "2.1.0", "tvm_version": "0.27",
        "scale": 1.0, "native_vs_tvm": native_vs_tvm, "native_vs_source": far,
        "tvm_vs_source": {"images": 16, "top1_discrepancy": 0.0, "max_abs_diff": 1e-7},
        **extra,
    }  # fmt: skip


def test_runtimes_that_disagree_on_one_file_blame_the_runtime() -> None:
    apart = {"images": 16, "top1_discrepancy": 12.5, "max_abs_diff": 0.2}
    [found] = runtime_findings(_evidence(apart))
    assert (found.stage, found.kind) == ("tools", "runtime")
    assert found.summary == (
        "the target file runs differently on TFLite (LiteRT) 2.1.0 than on TVM 0.27 (top-1 "
        "12.5%, max abs diff 0.2): the fault is in TFLite (LiteRT) 2.1.0"
    )
    twin = "its float twin (TVM refused the file; int8 weights dequantized)"
    [found] = runtime_findings(_evidence(apart, tvm_ran=twin))
    assert found.summary.endswith(
        f"the fault is in TFLite (LiteRT) 2.1.0's kernels (TVM ran {twin}; the difference is "
        "the runtime's hybrid int8 kernels quantizing activations on the fly)"
    )
    # below the tolerance (1e-3 of the largest output): the runtimes agree, the file is wrong
    close = {"images": 16, "top1_discrepancy": 0.0, "max_abs_diff": 9e-4}
    assert [f.kind for f in runtime_findings(_evidence(close, tvm_vs_source=apart))] == [
        "converter"
    ]
    # a dynamic-range file: int8 kernels and int8 weights, each its own finding
    both = runtime_findings(_evidence(apart, tvm_ran=twin, tvm_vs_source=apart))
    assert [f.kind for f in both] == ["runtime", "converter"]
    assert both[1].summary == (
        "on TVM 0.27 the target file also departs from the source (top-1 12.5%, max abs diff "
        "0.2): the fault is in the file, made by the converter that wrote the target"
    )
    assert runtime_findings(_evidence(None)) == []  # no TVM run: nothing to judge


def test_a_crashed_hop_and_an_agreeing_chain() -> None:
    crash = Crash("convert", "TFLiteConverter", "2.21.0", "ConverterError: op FlexFoo")
    chain = {
        "path": "r.json", "max_discrepancy": 0.0,
        "hops": [{"index": 1, "src": "onnx", "dst": "keras", "tool": "onnx2keras",
                  "version": "0.0.24", "options": {}, "artifact": None,
                  "top1_discrepancy": 0.0, "max_abs_diff": 0.0, "crash": None}],
    }  # fmt: skip
    [found] = hop_findings(chain)
    assert (found.kind, found.summary) == (
        "agreement",
        "every hop of the run (1) agrees with the source within 0% top-1",
    )
    chain["hops"][0]["crash"] = f"{crash.failure}: {crash.message}"
    [found] = hop_findings(chain)
    assert (found.kind, found.summary) == (
        "crash",
        "hop 1 (onnx -> keras, onnx2keras 0.0.24, options {}) crashed: exception: "
        "ConverterError: op FlexFoo",
    )
