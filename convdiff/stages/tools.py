"""Stage 1, tools: is the fault in the converter or in the target's runtime, and which hop of
a run's conversion chain first lost agreement.

(a) Runtime or converter: the orchestrator (:func:`convdiff.commands.localize.runs.measure_runs`)
runs the same target file on its own runtime and on TVM (an independent compiler with its own
kernels), both on the source's tensors. If the two runtimes disagree with each other the runtime is
at fault (for a dynamic-range TFLite file, TVM runs its float twin, so the difference is the
runtime's hybrid int8 kernels); TVM's outputs departing from the source's mean the file itself is
wrong: the converter (both can hold at once).

(b) With ``--run-report``: the first hop of that ``convdiff run`` whose agreement with the
source exceeds the run's threshold (or that crashed), with its tool, version and options.

Pure: it reads ``ctx.evidence["tools"]``.
"""

from __future__ import annotations

from typing import Any

from convdiff.stages import StageContext
from convdiff.stages.findings import Finding, jsonable

# outputs agree when no top-1 label differs and no value differs by more than this share of the
# largest output magnitude (float32 reorderings differ by ~1e-6, int8 kernels by ~1e-2)
RTOL = 1e-3


def run(ctx: StageContext) -> list[Finding]:
    if (
        "error" in ctx.evidence["tools"]
    ):  # a model did not run: this stage cannot judge (recorded as a crash)
        raise RuntimeError(ctx.evidence["tools"]["error"])
    evidence = ctx.evidence["tools"]
    return runtime_findings(evidence) + hop_findings(evidence.get("run_report"))


def disagree(metrics: dict[str, Any], scale: float) -> bool:
    return metrics["top1_discrepancy"] > 0 or metrics["max_abs_diff"] > RTOL * max(scale, 1e-12)


def runtime_findings(evidence: dict[str, Any]) -> list[Finding]:
    """``runtime``, ``converter`` or ``agreement`` from the native / TVM / source outputs."""
    if evidence.get("native_vs_tvm") is None:
        return []  # no TVM run (a Keras/SavedModel target has no TVM frontend): nothing to say
    runtime = f"{evidence['runtime']} {evidence['runtime_version']}"
    tvm = f"TVM {evidence['tvm_version']}"
    scale = evidence["scale"]
    both, native = evidence["native_vs_tvm"], evidence["native_vs_source"]
    numbers = jsonable(
        {
            "runtime": runtime,
            "tvm": tvm,
            "tvm_ran": evidence.get("tvm_ran", "the target file"),
            "scale": scale,
            "rtol": RTOL,
            "native_vs_tvm": both,
            "native_vs_source": native,
            "tvm_vs_source": evidence["tvm_vs_source"],
            "converter": evidence.get("converter"),
        }
    )
    found = []
    if disagree(both, scale):
        substitute = evidence.get("tvm_ran", "the target file") != "the target file"
        cause = (
            f"{runtime}'s kernels (TVM ran {evidence['tvm_ran']}; the difference is the "
            "runtime's hybrid int8 kernels quantizing activations on the fly)"
            if substitute
            else runtime
        )
        suggestion = (
            "convert without dynamic-range quantization, or accept the runtime's int8 loss"
            if substitute
            else f"report it to {evidence['runtime']}'s maintainers; run the file on another "
            "runtime (TVM gives the agreeing outputs) or another version meanwhile"
        )
        if substitute and evidence.get("twin_drops"):  # the file quantizes its activations
            cause = f"{evidence['twin_drops']} (TVM ran {evidence['tvm_ran']})"
            suggestion = (
                "the weights stage names each layer computing in integers; convdiff repair's "
                "float fallback runs the layers that lose most in float"
            )
        found.append(
            Finding(
                "tools",
                "runtime",
                None,
                None,
                f"the target file runs differently on {runtime} than on {tvm} (top-1 "
                f"{both['top1_discrepancy']:.4g}%, max abs diff {both['max_abs_diff']:.3g}): "
                f"the fault is in {cause}",
                numbers,
                suggestion,
            )
        )
    # TVM runs what the file says: departing from the source there, the file itself is wrong
    on_tvm = evidence["tvm_vs_source"]
    if disagree(on_tvm, scale):
        converter = evidence.get("converter")
        tool = (
            f"{converter['tool']} {converter['version']} (hop {converter['index']}, options "
            f"{converter['options']})"
            if converter
            else "the converter that wrote the target"
        )
        where = (
            f"on {tvm} the target file also departs from the source"
            if found
            else f"{runtime} and {tvm} agree on the target file but it departs from the source"
        )
        shown = on_tvm if found else native
        found.append(
            Finding(
                "tools",
                "converter",
                None,
                None,
                f"{where} (top-1 {shown['top1_discrepancy']:.4g}%, max abs diff "
                f"{shown['max_abs_diff']:.3g}): the fault is in the file, made by {tool}",
                numbers,
                "repair the conversion: the weights, hyperparams and graph stages name the "
                "layers it changed",
            )
        )
    if found:
        return found
    return [
        Finding.agreement(
            "tools",
            f"the target agrees with the source on {runtime} and on {tvm}",
            numbers,
        )
    ]


def hop_findings(report: dict[str, Any] | None) -> list[Finding]:
    """The first hop of a run that crashed or lost agreement (``hop``/``crash``), else an
    ``agreement``. ``report`` is the evidence
    :func:`convdiff.commands.localize.runs.chain_evidence` made."""
    if report is None:
        return []
    threshold = report["max_discrepancy"]
    previous = 0.0
    for hop in report["hops"]:
        where = (
            f"hop {hop['index']} ({hop['src']} -> {hop['dst']}, {hop['tool']} {hop['version']}, "
            f"options {hop['options'] or '{}'})"
        )
        evidence = jsonable({**hop, "max_discrepancy": threshold, "run": report["path"]})
        if hop["crash"]:
            return [
                Finding(
                    "tools",
                    "crash",
                    None,
                    None,
                    f"{where} crashed: {hop['crash']}",
                    evidence,
                    f"the chain stops at {hop['tool']}: try another version or another route "
                    "(--via)",
                )
            ]
        top1 = hop["top1_discrepancy"]
        if top1 is not None and top1 > threshold:
            return [
                Finding(
                    "tools",
                    "hop",
                    None,
                    None,
                    f"{where} first lost agreement: top-1 discrepancy {top1:.4g}% against the "
                    f"source (the hop before: {previous:.4g}%; threshold {threshold:g}%)",
                    evidence,
                    f"look at {hop['tool']} {hop['version']} and its options first: every "
                    "hop before it agrees",
                    score=top1 / 100,
                )
            ]
        previous = top1 or 0.0
    return [
        Finding.agreement(
            "tools",
            f"every hop of the run ({len(report['hops'])}) agrees with the source within "
            f"{threshold:g}% top-1",
            jsonable({"run": report["path"], "hops": report["hops"]}),
        )
    ]


__all__ = ["RTOL", "disagree", "hop_findings", "run", "runtime_findings"]
