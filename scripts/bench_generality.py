"""Benchmark how general convdiff's localization is: many architectures, real conversions,
injected faults (convdiff issue #12, "What it must show").

For each architecture (:data:`ARCHITECTURES`: 19 models of 7 families -- classic CNNs, mobile
CNNs with hard-swish/SE, EfficientNets, ConvNeXt, vision transformers, conv/attention hybrids
through timm and torchvision, and keras.applications models) and each of its conversions
(:data:`CONVERSIONS`), as a user would, through the CLI in subprocesses:

1. ``convdiff run --src S --dst D MODEL`` converts it with the real tool (seeded BN-calibrated
   random weights; one conversion at a time, one artifact cache for the whole benchmark);
   ``ort-qdyn`` instead quantizes the float ONNX export with onnxruntime's
   ``quantize_dynamic``, here;
2. ``convdiff localize SOURCE TARGET`` (default stages, the run's preprocessing and
   ``--run-report``) on the clean conversion: its weights / hyperparams / graph findings are
   counted (goal: 0 everywhere; weight ``precision`` findings are counted apart, as a
   quantized target must have them), with the wall time and exit code;
3. on each float ONNX target, each fault of ``tests/tiny/onnx_faults.py`` is injected (into a
   middle node whose edit moves the outputs on the run's images) and ``convdiff localize
   REFERENCE FAULTY`` runs: the fault is *named* when a finding has its stage, one of its kinds
   and its ONNX node's name. The reference is the clean ONNX export (``--fault-reference
   onnx``, default: both files name their nodes alike, and the conversion's own findings do not
   mix in) or the conversion's source model (``source``: the user's view; a dropped layer then
   has only the source's name, which is not the ONNX one).

Results go to OUT/results.json (one record per conversion, its faults inside) and
OUT/table.md (printed too). Every failure -- a converter crash, a localize exit 3, a fault with
no suitable node -- is a result, not a stop.

    .venv/bin/python scripts/bench_generality.py [--models timm:resnet18,...] [--families
        classic,transformer] [--conversions torchscript,dynamo] [--faults all|none|a,b]
        [--out DIR] [--json PATH] [--fault-reference onnx|source] [--keep]
    .venv/bin/python scripts/bench_generality.py --render OUT/results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import CONVDIFF, ROOT

sys.path.insert(0, str(ROOT))
from tests.tiny.onnx_faults import FAULTS, inject  # noqa: E402

GRAPH_STAGES = ("weights", "hyperparams", "graph")


@dataclass(frozen=True)
class Arch:
    family: str
    model: str  # a `convdiff run` model name (zoo name or timm:<name>)
    framework: str  # torch | keras: the source framework


@dataclass(frozen=True)
class Conversion:
    """One way to convert a source: the `convdiff run` arguments, or (``quantize``) a dynamic
    quantization by onnxruntime of the float ONNX export ``base``."""

    name: str
    framework: str  # the source framework it applies to
    dst: str
    args: tuple[str, ...] = ()
    base: str = ""  # quantize the target of this conversion instead of running one
    faults: bool = False  # a float ONNX target: the faults are injected into it


ARCHITECTURES = [
    Arch("classic", "timm:resnet18", "torch"),
    Arch("classic", "timm:regnetx_002", "torch"),
    Arch("classic", "timm:densenet121", "torch"),
    Arch("mobile", "timm:mobilenetv3_small_100", "torch"),
    Arch("mobile", "timm:ghostnet_100", "torch"),
    Arch("mobile", "mobilenetv2", "torch"),  # torchvision
    Arch("efficientnet", "timm:efficientnet_b0", "torch"),
    Arch("efficientnet", "efficientnet_lite0", "torch"),
    Arch("convnext", "timm:convnext_atto", "torch"),
    Arch("convnext", "timm:convnext_femto", "torch"),
    Arch("transformer", "timm:deit_tiny_patch16_224", "torch"),
    Arch("transformer", "timm:vit_tiny_patch16_224", "torch"),
    Arch("hybrid", "timm:mobilevit_xxs", "torch"),
    Arch("hybrid", "timm:levit_128s", "torch"),
    Arch("hybrid", "timm:efficientvit_b0", "torch"),
    Arch("keras", "mobilenetv2", "keras"),
    Arch("keras", "efficientnetv2_b0", "keras"),
    Arch("keras", "convnext_tiny", "keras"),
    Arch("keras", "inceptionv3", "keras"),
]

TORCHSCRIPT = ("--torch-exporter", "torchscript", "--opset", "17")
CONVERSIONS = {
    c.name: c
    for c in (
        Conversion("torchscript", "torch", "onnx", TORCHSCRIPT, faults=True),
        Conversion("dynamo", "torch", "onnx", ("--torch-exporter", "dynamo"), faults=True),
        Conversion("onnx2torch", "torch", "torch", ("--via", "onnx", *TORCHSCRIPT)),
        Conversion("ort-qdyn", "torch", "onnx", base="torchscript"),
        Conversion("tf2onnx", "keras", "onnx", faults=True),
        Conversion("tflite", "keras", "tflite", ("--tflite-opt", "none")),
        Conversion("tflite-fp16", "keras", "tflite", ("--tflite-opt", "float16")),
        Conversion("tflite-dr", "keras", "tflite", ("--tflite-opt", "dynamic-range")),
        Conversion("ort-qdyn-keras", "keras", "onnx", base="tf2onnx"),
    )
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def call(cmd: list[str], env: dict[str, str], log_file: Path) -> tuple[int, float]:
    """Exit code and wall seconds of ``cmd`` (its output to ``log_file``)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_file.open("w") as out:
        code = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    return code, time.perf_counter() - started


# -- converting ------------------------------------------------------------------------------


def convert(arch: Arch, conv: Conversion, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """`convdiff run` (or the quantization of an earlier run's export): source, target, the
    run folder, wall seconds, and a crash message when there is no target."""
    folder = out / "runs" / slug(arch) / conv.name
    if conv.base:
        return quantize(arch, CONVERSIONS[conv.base], out, env, folder)
    report_path = folder / "report.json"
    if not report_path.exists():
        cmd = [*CONVDIFF, "run", arch.model, "--src", arch.framework, "--dst", conv.dst]
        cmd += [*conv.args, "--out", str(folder), "--cache-dir", str(out / "cache"), "--quiet"]
        code, wall = call(cmd, env, folder.parent / f"{conv.name}-run.log")
    else:
        code, wall = 0, 0.0  # converted by an earlier conversion of this benchmark (a base)
    if not report_path.exists():
        return {"crash": f"convdiff run exited {code} without a report", "convert_s": wall}
    report = json.loads(report_path.read_text())
    crashes = [c.get("message", str(c)) for c in report.get("crashes") or []]
    last = report["chain"][-1] if report.get("chain") else None
    if last is None or last.get("crash") or not last.get("artifact"):
        crash = (last or {}).get("crash") or {}
        message = crash.get("message") if isinstance(crash, dict) else str(crash)
        return {"crash": message or "; ".join(crashes) or report.get("error"), "convert_s": wall}
    return {
        "source": report["source"]["path"],
        "target": last["artifact"]["path"],
        "run": str(report_path),
        "preprocessing": report["preprocessing"],
        "images": str(folder / "inputs" / "x.npz"),
        "status": report["status"],
        "top1": report["top1_discrepancy"],
        "max_abs_diff": report["max_abs_diff"],
        "convert_s": wall,
    }


def quantize(
    arch: Arch, base: Conversion, out: Path, env: dict[str, str], folder: Path
) -> dict[str, Any]:
    """onnxruntime's ``quantize_dynamic`` (int8 weights, per tensor) of ``base``'s ONNX export."""
    done = convert(arch, base, out, env)
    if "crash" in done:
        return {"crash": f"no {base.name} export to quantize: {done['crash']}", "convert_s": 0.0}
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model-qdyn.onnx"
    started = time.perf_counter()
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, on every call
    try:
        quantize_dynamic(done["target"], target, weight_type=QuantType.QInt8)
    except Exception as exc:  # a quantizer failure is a result
        return {"crash": f"quantize_dynamic: {type(exc).__name__}: {exc}", "convert_s": 0.0}
    return {**done, "target": str(target), "convert_s": time.perf_counter() - started}


# -- localizing ------------------------------------------------------------------------------


def preprocessing_args(spec: dict[str, Any]) -> list[str]:
    """The run's preprocessing as localize options (so both feed the same images)."""
    h, w = spec["size"]
    args = ["--input-size", f"{h},{w}", "--layout", spec["layout"].lower()]
    if spec.get("channels") == "BGR":
        return [*args, "--preprocess", "caffe"]
    join = ",".join
    args += ["--mean", join(map(str, spec["mean"])), "--std", join(map(str, spec["std"]))]
    return [*args, "--resize", spec["resize"]]


def localize(
    source: str,
    target: str,
    spec: dict[str, Any],
    folder: Path,
    env: dict[str, str],
    *extra: str,
    keep: bool = False,
) -> dict[str, Any]:
    """`convdiff localize` (default stages): exit code, wall seconds, findings (report.json)."""
    cmd = [*CONVDIFF, "localize", source, target, *preprocessing_args(spec), *extra]
    code, wall = call([*cmd, "--out", str(folder), "--quiet"], env, folder.parent / "localize.log")
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if not keep:
        prune(folder)
    error = report.get("error", "")
    if code == 2 and not error:  # a user error before any report: its line in the log
        lines = (folder.parent / "localize.log").read_text().splitlines()
        said = [x[len("error:") :].strip() for x in lines if x.lower().startswith("error:")]
        error = (said or lines[-1:] or ["no report"])[-1]
    return {
        "exit": code,
        "localize_s": wall,
        "findings": report.get("findings", []),
        "crashes": [c.get("message", str(c)) for c in report.get("crashes") or []],
        "error": str(error),
    }


def recount(results: list[dict[str, Any]], out: Path) -> None:
    """Count the clean findings again from the localizations' report.json files under
    ``out`` (a results file written before a change of :func:`counts`)."""
    for r in results:
        arch = Arch(r["family"], r["model"], r["framework"])
        report = out / "localize" / slug(arch) / r["conversion"] / "clean" / "report.json"
        if "clean" in r and report.exists():
            r["clean"]["counts"] = counts(json.loads(report.read_text()).get("findings", []))


def prune(folder: Path) -> None:
    """Drop a localization's tensors (activations under runs/, graph weights under ir/: up to
    1 GB for a small transformer), keeping its reports, graphs and alignment."""
    shutil.rmtree(folder / "runs", ignore_errors=True)
    for npz in (folder / "ir").glob("*/*.npz"):
        npz.unlink()


def counts(findings: list[dict[str, Any]]) -> dict[str, int]:
    """Faults per graph stage; weight precision findings apart (expected on quantized files),
    and latent differences apart (no fault: the function check proved their segment equal)."""
    found = {stage: 0 for stage in GRAPH_STAGES} | {"precision": 0, "latent": 0}
    for f in findings:
        if f["kind"] == "agreement" or f["stage"] not in GRAPH_STAGES:
            continue
        key = "precision" if (f["stage"], f["kind"]) == ("weights", "precision") else f["stage"]
        found["latent" if f.get("evidence", {}).get("latent") else key] += 1
    return found


def fault_results(
    done: dict[str, Any],
    faults: list[str],
    folder: Path,
    env: dict[str, str],
    reference: str,
    keep: bool,
) -> dict[str, dict[str, Any]]:
    import numpy as np

    with np.load(done["images"]) as data:
        images = data["x"][:4]
    source = done["target"] if reference == "onnx" else done["source"]
    results = {}
    for fault in faults:
        where = folder / fault
        where.mkdir(parents=True, exist_ok=True)
        faulty = where / "faulty.onnx"
        started = time.perf_counter()
        try:
            expected = inject(done["target"], fault, faulty, images)
        except Exception as exc:  # the injector's failure on a real graph is a result
            results[fault] = {"status": "inject_error", "error": f"{type(exc).__name__}: {exc}"}
            log(f"    {fault}: injector failed ({type(exc).__name__}: {exc})")
            continue
        inject_s = time.perf_counter() - started
        if expected is None:
            results[fault] = {"status": "no_node", "inject_s": inject_s}
            log(f"    {fault}: no suitable node")
            continue
        loc = localize(source, str(faulty), done["preprocessing"], where / "loc", env, keep=keep)
        named = expected.named_by(loc["findings"])
        # the right stage and kind at another layer name (e.g. a canonical id, no file name)
        kind_only = any(
            f["stage"] == expected.stage and f["kind"] in expected.kind_options
            for f in loc["findings"]
        )
        at_node = [
            f"{f['stage']}/{f['kind']}"
            for f in loc["findings"]
            if expected.names
            and {f.get("source_layer"), f.get("target_layer")} & set(expected.names)
        ]
        results[fault] = {
            "status": "named" if named else ("kind_only" if kind_only else "missed"),
            "found": [
                f"{f['stage']}/{f['kind']} @ {f.get('target_layer') or f.get('source_layer')}"
                for f in loc["findings"]
                if f["kind"] != "agreement"
            ],
            "expected": expected.to_dict(),
            "inject_s": inject_s,
            "at_node": at_node,
            "counts": counts(loc["findings"]),
            **{k: loc[k] for k in ("exit", "localize_s", "crashes", "error")},
        }
        log(
            f"    {fault}: {results[fault]['status']} ({expected.change}; findings at the node: "
            f"{', '.join(at_node) or 'none'}; localize {loc['localize_s']:.1f} s)"
        )
        if not keep:
            faulty.unlink(missing_ok=True)
    return results


# -- the benchmark ---------------------------------------------------------------------------


def slug(arch: Arch) -> str:
    return f"{arch.framework}-{arch.model.replace(':', '_')}"


def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.out).resolve()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    archs = [
        a
        for a in ARCHITECTURES
        if (not args.models or a.model in args.models.split(","))
        and (not args.families or a.family in args.families.split(","))
    ]
    wanted = args.conversions.split(",") if args.conversions else list(CONVERSIONS)
    faults = {"all": list(FAULTS), "none": []}.get(args.faults, args.faults.split(","))
    plan = [
        (a, CONVERSIONS[c])
        for a in archs
        for c in wanted
        if CONVERSIONS[c].framework == a.framework
    ]
    results = []
    for i, (arch, conv) in enumerate(plan, 1):
        log(f"[{i}/{len(plan)}] {arch.model} ({arch.framework}, {arch.family}) {conv.name}")
        record: dict[str, Any] = {"family": arch.family, "model": arch.model}
        record |= {"framework": arch.framework, "conversion": conv.name}
        done = convert(arch, conv, out, env)
        record["convert"] = done
        if "crash" in done:
            log(f"  conversion failed: {done['crash']}")
            results.append(record)
            continue
        folder = out / "localize" / slug(arch) / conv.name
        extra = ["--run-report", done["run"]] if not conv.base else []
        spec = done["preprocessing"]
        clean = localize(
            done["source"], done["target"], spec, folder / "clean", env, *extra, keep=args.keep
        )
        record["clean"] = {**clean, "counts": counts(clean["findings"])}
        record["clean"].pop("findings")
        c = record["clean"]["counts"]
        log(
            f"  convert {done['convert_s']:.1f} s (top-1 {done['top1']:.1f}%), localize "
            f"{clean['localize_s']:.1f} s exit {clean['exit']}: {c['weights']} weights "
            f"(+{c['precision']} precision), {c['hyperparams']} hyperparams, {c['graph']} graph"
            + (f"; crashes: {'; '.join(clean['crashes'])}" if clean["crashes"] else "")
            + (f"; error: {clean['error']}" if clean["error"] else "")
        )
        if conv.faults and faults:
            record["faults"] = fault_results(
                done, faults, folder / "faults", env, args.fault_reference, args.keep
            )
        results.append(record)
        write(results, faults, args, out)
    return results


# a fault's status: named, missed, or why localize could not say (by its exit code)
STATUS = {2: "error", 3: "crash"}
MARKS = {
    "named": "yes",
    "kind_only": "kind, not layer",
    "missed": "no",
    "error": "error",
    "crash": "crash",
    "no_node": "–",
    "inject_error": "inject error",
}


def table(results: list[dict[str, Any]], faults: list[str]) -> str:
    """Markdown: per architecture x conversion, clean findings and localize seconds; per fault,
    named yes / no ("kind, not layer": a finding of its stage and kind names another layer
    or a canonical id; –: no suitable node in that graph; error: localize exit 2, e.g. a model TVM
    cannot import or layers it cannot pair; crash: exit 3, a stage crashed); a note says why
    localize stopped."""
    short = [f.replace("_", " ") for f in faults]
    head = "| family | model | conversion | W | H | G | precision | latent | localize s | exit |"
    lines = [head + "".join(f" {s} |" for s in short) + " note |"]
    lines.append("|---" * (11 + len(faults)) + "|")
    for r in results:
        row = f"| {r['family']} | {r['model']} | {r['conversion']} |"
        if "clean" not in r:
            note = cell(f"conversion failed: {r['convert'].get('crash', '')}")
            lines.append(row + " |" * (7 + len(faults)) + f" {note} |")
            continue
        c, clean = r["clean"]["counts"], r["clean"]
        if clean["exit"] in (0, 1):
            row += f" {c['weights']} | {c['hyperparams']} | {c['graph']} | {c['precision']} |"
            row += f" {c.get('latent', 0)} |"
        else:  # localize stopped: no count means anything
            row += " n/a |" * 5
        row += f" {clean['localize_s']:.1f} | {clean['exit']} |"
        for fault in faults:
            got = r.get("faults", {}).get(fault)
            row += f" {MARKS[status(got)] if got else ''} |"
        lines.append(row + f" {cell('; '.join([clean['error'], *clean['crashes']]).strip('; '))} |")
    named = [
        status(got) == "named"
        for r in results
        for got in r.get("faults", {}).values()
        if got["status"] != "no_node"
    ]
    finished = [r for r in results if "clean" in r and r["clean"]["exit"] in (0, 1)]
    zero = sum(not any(r["clean"]["counts"][s] for s in GRAPH_STAGES) for r in finished)
    lines += [
        "",
        f"{len(results)} conversions, {len(finished)} localized to the end; of those, "
        f"{zero} without a weights/hyperparams/graph fault (precision and latent apart). Faults "
        "named "
        f"at their stage and layer: {sum(named)} of {len(named)} injected.",
    ]
    return "\n".join(lines)


def status(got: dict[str, Any]) -> str:
    """A fault's status; a miss of a localization that could not finish is its exit's."""
    if got["status"] in ("missed", "kind_only"):
        return STATUS.get(got.get("exit", 1), got["status"])
    return got["status"]


def cell(text: str, width: int = 90) -> str:
    """One Markdown table cell: one line, no pipes, at most ``width`` characters."""
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= width else text[: width - 3] + "..."


def write(
    results: list[dict[str, Any]], faults: list[str], args: argparse.Namespace, out: Path
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"schema_version": 1, "faults": faults, "fault_reference": args.fault_reference}
    data["results"] = results
    json_path = Path(args.json) if args.json else out / "results.json"
    json_path.write_text(json.dumps(data, indent=1))
    (out / "table.md").write_text(table(results, faults) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated model names (default all)")
    parser.add_argument(
        "--families", default="", help=f"of {sorted({a.family for a in ARCHITECTURES})}"
    )
    parser.add_argument("--conversions", default="", help=f"of {list(CONVERSIONS)}")
    parser.add_argument("--faults", default="all", help=f"all | none | of {list(FAULTS)}")
    parser.add_argument("--fault-reference", default="onnx", choices=["onnx", "source"])
    parser.add_argument("--out", default="bench-generality", help="the benchmark's folder")
    parser.add_argument("--json", default="", help="results file (default OUT/results.json)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the faulty ONNX files and localize tensors"
    )
    parser.add_argument("--render", default="", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        data = json.loads(Path(args.render).read_text())
        recount(data["results"], Path(args.render).resolve().parent)
        print(table(data["results"], data["faults"]))
        return
    unknown = set(args.conversions.split(",") if args.conversions else []) - set(CONVERSIONS)
    unknown |= (
        set(args.faults.split(",")) - set(FAULTS) if args.faults not in ("all", "none") else set()
    )
    if unknown:
        parser.error(f"unknown conversion or fault: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    results = bench(args)
    faults = {"all": list(FAULTS), "none": []}.get(args.faults, args.faults.split(","))
    write(results, faults, args, Path(args.out).resolve())
    print(table(results, faults))
    print(f"\n{len(results)} conversions in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
