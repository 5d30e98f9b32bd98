"""The command line: parse options into a config, call the library, print, set the exit code.

Exit codes: 0 agreement within the threshold, 1 discrepancy above it, 2 bad usage or input,
3 a converter or runtime crashed (or the run stopped early), 4 an internal error of convdiff.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import click

from convdiff.config import TFLITE_OPTS, TORCH_EXPORTERS, ConvertOptions, RunConfig
from convdiff.errors import ConvdiffError
from convdiff.frameworks import FRAMEWORKS

EXIT_INTERNAL = 4


class _Numbers(click.ParamType):
    """A comma-separated list of ``count`` numbers, e.g. ``299,299`` or ``0.5,0.5,0.5``."""

    def __init__(self, count: int, kind: type, example: str) -> None:
        self.count, self.kind, self.example = count, kind, example
        self.name = f"{count} comma-separated numbers"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(self.kind(p) for p in str(value).split(","))
        except ValueError:
            parts = ()
        if len(parts) != self.count:
            self.fail(
                f"{value!r} is not {self.count} comma-separated numbers (e.g. {self.example})"
            )
        return parts


def _preprocessing_options(command: Callable) -> Callable:
    """The preprocessing options of a source model file, shared by ``run`` and ``localize``."""
    options = [
        click.option(
            "--preprocess",
            "preset",
            type=click.Choice(["imagenet", "inception", "caffe"]),
            help="Preprocessing preset for a model file.",
        ),
        click.option(
            "--input-size", type=_Numbers(2, int, "299,299"), help="H,W for a model file."
        ),
        click.option("--mean", type=_Numbers(3, float, "0.485,0.456,0.406"), help="R,G,B in 0..1."),
        click.option("--std", type=_Numbers(3, float, "0.229,0.224,0.225"), help="R,G,B in 0..1."),
        click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False)),
        click.option("--resize", type=click.Choice(["stretch", "center-crop"])),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _frameworks_choice() -> click.Choice:
    return click.Choice(list(FRAMEWORKS), case_sensitive=False)


class _Cli(click.Group):
    """A group whose errors are one line each, also under click's CliRunner."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        code = _guarded(
            lambda: super(_Cli, self).main(
                args=args, prog_name=prog_name or "convdiff", standalone_mode=False, **extra
            ),
            debug="--debug" in args,
        )
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(name="convdiff", cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="convdiff")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """convdiff: find, explain and repair what model converters break."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("model")
@click.option("--src", type=_frameworks_choice(), help="Source framework (zoo models need it).")
@click.option("--dst", type=_frameworks_choice(), required=True, help="Target framework.")
@click.option("--via", default="", help="Force intermediate frameworks, e.g. onnx or onnx,keras.")
@click.option(
    "--weights",
    default="auto",
    show_default=True,
    help="auto | imagenet | random | PATH to a weights file (zoo models).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of random weights.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image folder (default: the embedded sample set).",
)
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file for --data.")
@click.option("--limit", type=click.IntRange(min=1), help="Use at most this many images.")
@click.option(
    "--tflite-opt",
    type=click.Choice(TFLITE_OPTS),
    default="none",
    show_default=True,
    help="TFLiteConverter optimization (dynamic-range is the published study's setting).",
)
@click.option("--opset", type=click.IntRange(7, 23), help="ONNX opset for exporters.")
@click.option(
    "--torch-exporter", type=click.Choice(TORCH_EXPORTERS), default="dynamo", show_default=True
)
@_preprocessing_options
@click.option(
    "--max-discrepancy",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 100),
    help="Top-1 discrepancy (percent) still counted as agreement.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Run folder.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Converted-model cache.")
@click.option("--no-cache", is_flag=True, help="Convert again even if a cached file exists.")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds per worker task.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--localize",
    is_flag=True,
    help="Then localize the last artifact against the source (all stages, in run/localize).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Then repair the last artifact (localize, patch, verify; in run/repair).",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.pass_context
def run(ctx: click.Context, model: str, via: str, quiet: bool, **options: object) -> None:
    """Convert MODEL (zoo name or model file) and compare source and target on images."""
    from convdiff.progress import Progress
    from convdiff.render import summary
    from convdiff.run import run as run_conversion

    config = RunConfig(
        model=model,
        src=options["src"],
        dst=options["dst"],
        via=tuple(v.strip() for v in via.split(",") if v.strip()),
        weights=options["weights"],
        seed=options["seed"],
        data=options["data"],
        labels=options["labels"],
        limit=options["limit"],
        convert=ConvertOptions(
            tflite_opt=options["tflite_opt"],
            opset=options["opset"],
            torch_exporter=options["torch_exporter"],
        ),
        preprocess=options["preset"],
        input_size=options["input_size"],
        mean=options["mean"],
        std=options["std"],
        layout=options["layout"].upper() if options["layout"] else None,
        resize=options["resize"],
        max_discrepancy=options["max_discrepancy"],
        out=options["out"],
        cache_dir=options["cache_dir"],
        use_cache=not options["no_cache"],
        timeout=options["timeout"],
        batch_size=options["batch_size"],
        localize=bool(options["localize"]),
        repair=bool(options["repair"]),
    )
    report = run_conversion(config, Progress(enabled=not quiet))
    click.echo(summary(report))
    ctx.exit(report.exit_code)


@cli.command()
@click.argument("config_file", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Check folder (default ./convdiff-check/TIME)."
)
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Converted-model cache.")
@click.option("--quiet", is_flag=True, help="No progress lines, only one line per conversion.")
@click.option("--localize", is_flag=True, help="Name the top localized finding of each FAIL.")
@click.pass_context
def check(
    ctx: click.Context,
    config_file: Path,
    junit: Path | None,
    out: Path | None,
    cache_dir: Path | None,
    quiet: bool,
    localize: bool,
) -> None:
    """Run every conversion of a TOML CONFIG and judge it against its thresholds (for CI)."""
    from convdiff.check import run_check
    from convdiff.check_config import CheckConfigError, load_check_config

    try:
        config = load_check_config(config_file)
    except CheckConfigError as exc:
        for line in exc.lines():
            click.echo(f"error: {line}", err=True)
        ctx.exit(2)
    result = run_check(
        config,
        out,
        cache_dir,
        junit,
        progress=not quiet,
        on_result=lambda entry: click.echo(entry.line),
        localize=localize,
    )
    click.echo(result.summary())
    ctx.exit(result.exit_code)


@cli.command()
@click.option("--models", required=True, help="Comma-separated zoo names or model files.")
@click.option(
    "--frameworks",
    default="torch,keras,tf,tflite",
    show_default=True,
    help="Target columns; a zoo model's source rows are those of them the zoo offers.",
)
@click.option("--data", type=click.Path(path_type=Path), help="Image folder (default: samples).")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file for --data.")
@click.option("--limit", type=click.IntRange(min=1), help="Use at most this many images.")
@click.option("--weights", default="auto", show_default=True, help="As for convdiff run.")
@click.option("--seed", default=0, show_default=True, help="Seed of random weights.")
@click.option(
    "--preprocess",
    type=click.Choice(["source", "target"]),
    default="source",
    show_default=True,
    help="Feed each target the source's tensor, or its own framework's customary one.",
)
@click.option("--tflite-opt", type=click.Choice(TFLITE_OPTS), default="none", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Table folder (resumable).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--max-memory",
    type=click.FloatRange(min=0, min_open=True),
    help="GB the running cells may use together (default: 75% of the machine's memory).",
)
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Converted-model cache.")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds per worker task.")
@click.option("--localize", is_flag=True, help="Name the top finding of each discrepancy cell.")
@click.option(
    "--localize-above",
    type=click.FloatRange(min=0),
    help="Also localize cells whose max |diff| exceeds this (implies --localize).",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.pass_context
def table(ctx: click.Context, models: str, frameworks: str, quiet: bool, **options: object):
    """Label-discrepancy table: every model x source x target framework, one run per cell."""
    from convdiff.table import TableConfig
    from convdiff.table import table as run_table
    from convdiff.table_render import to_markdown

    config = TableConfig(
        models=tuple(m.strip() for m in models.split(",") if m.strip()),
        frameworks=tuple(f.strip().lower() for f in frameworks.split(",") if f.strip()),
        out=options["out"],
        jobs=options["jobs"],
        max_memory_gb=options["max_memory"],
        preprocess=options["preprocess"],
        weights=options["weights"],
        seed=options["seed"],
        data=options["data"],
        labels=options["labels"],
        limit=options["limit"],
        tflite_opt=options["tflite_opt"],
        cache_dir=options["cache_dir"],
        timeout=options["timeout"],
        localize=bool(options["localize"]) or options["localize_above"] is not None,
        localize_above=options["localize_above"],
    )
    report = run_table(config, quiet=quiet)
    click.echo(to_markdown(report), nl=False)
    click.echo(f"table: {Path(report.out_dir) / 'table.html'} (also .json, .csv, .md)")
    ctx.exit(report.exit_code)


def _model_pair_options(command: Callable) -> Callable:
    """SOURCE_MODEL TARGET_MODEL and what running them on images needs: shared by
    ``localize`` and ``repair``."""
    options = [
        click.argument("source_model", type=click.Path(path_type=Path)),
        click.argument("target_model", type=click.Path(path_type=Path)),
        click.option("--src", type=_frameworks_choice(), help="Framework of SOURCE_MODEL."),
        click.option("--dst", type=_frameworks_choice(), help="Framework of TARGET_MODEL."),
        click.option(
            "--data", type=click.Path(path_type=Path), help="Image folder (default: samples)."
        ),
        click.option("--labels", type=click.Path(path_type=Path), help="Labels file for --data."),
        click.option("--limit", type=click.IntRange(min=1), help="Use at most this many images."),
        _preprocessing_options,
        click.option(
            "--target-preprocess",
            type=click.Choice(["imagenet", "inception", "caffe"]),
            help="inputs: the preset the target's framework customarily uses (default: the "
            "source's).",
        ),
        click.option(
            "--run-report",
            type=click.Path(path_type=Path),
            help="tools: a `convdiff run` report.json; names the hop that first lost agreement.",
        ),
        click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1)),
        click.option("--out", type=click.Path(path_type=Path), help="Output folder."),
        click.option(
            "--timeout", default=1800.0, show_default=True, help="Seconds per worker task."
        ),
        click.option("--quiet", is_flag=True, help="No progress lines."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _localize_config(options: dict, stages: tuple[str, ...]):  # -> LocalizeConfig
    from convdiff.localize import LocalizeConfig

    return LocalizeConfig(
        source=str(options["source_model"]),
        target=str(options["target_model"]),
        src=options["src"],
        dst=options["dst"],
        stages=stages,
        out=options["out"],
        timeout=options["timeout"],
        data=options["data"],
        labels=options["labels"],
        limit=options["limit"],
        preprocess=options["preset"],
        input_size=options["input_size"],
        mean=options["mean"],
        std=options["std"],
        layout=options["layout"],
        resize=options["resize"],
        target_preprocess=options["target_preprocess"],
        run_report=options["run_report"],
        batch_size=options["batch_size"],
    )


@cli.command()
@_model_pair_options
@click.option(
    "--stages",
    default="inputs,tools,weights,hyperparams,graph",
    show_default=True,
    help="Comma-separated stages to run (inputs and tools run the models on images, which "
    "also gives the graph stage its activation evidence; weights,hyperparams,graph alone read "
    "the graphs only).",
)
@click.pass_context
def localize(ctx: click.Context, stages: str, quiet: bool, **options: object) -> None:
    """Find which layers of TARGET_MODEL depart from SOURCE_MODEL, and why (exit 0 none, 1 found,
    3 a stage crashed)."""
    from convdiff.localize import localize as run_localize
    from convdiff.localize import summary
    from convdiff.progress import Progress

    config = _localize_config(options, tuple(s.strip() for s in stages.split(",") if s.strip()))
    report = run_localize(config, Progress(enabled=not quiet))
    click.echo(summary(report))
    if report.error:
        click.echo(f"error: {report.error}", err=True)
    ctx.exit(report.exit_code)


@cli.command()
@_model_pair_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="The repaired model file (same format as TARGET_MODEL; never TARGET_MODEL itself).",
)
@click.pass_context
def repair(ctx: click.Context, output: Path, quiet: bool, **options: object) -> None:
    """Localize TARGET_MODEL's faults against SOURCE_MODEL, patch them, verify, write OUTPUT
    (exit 0 the target agrees with the source, repaired or already; 1 a discrepancy remains)."""
    from convdiff.progress import Progress
    from convdiff.repair.command import RepairConfig, summary
    from convdiff.repair.command import repair as run_repair
    from convdiff.stages.findings import STAGES

    config = RepairConfig(_localize_config(options, STAGES), output, options["out"])
    report = run_repair(config, Progress(enabled=not quiet))
    click.echo(summary(report))
    ctx.exit(report.exit_code)


@cli.group()
def patch() -> None:
    """Read and apply repair patches (patch.json + patch.npz, written by `convdiff repair`)."""


@patch.command("apply")
@click.argument("patch_file", metavar="PATCH.json", type=click.Path(path_type=Path))
@click.argument("target_model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def patch_apply(patch_file: Path, target_model: Path, output: Path) -> None:
    """Apply PATCH.json to TARGET_MODEL (the very file it was planned for), writing OUTPUT."""
    from convdiff.repair.apply import apply_patch

    result = apply_patch(patch_file, target_model, output)
    click.echo(f"applied {len(result.applied)} edit(s) to {target_model.name}: {result.out}")
    for skipped in result.skipped:
        click.echo(f"  not applied: {skipped.edit.layer}.{skipped.edit.field}: {skipped.reason}")


@patch.command("show")
@click.argument("patch_file", metavar="PATCH.json", type=click.Path(path_type=Path))
def patch_show(patch_file: Path) -> None:
    """Print PATCH.json as a readable diff, one line per edit."""
    from convdiff.repair.patch import Patch, diff_view

    loaded, tensors = Patch.load(patch_file)
    click.echo(f"patch for {loaded.target['name']} ({loaded.target['format']}), planned "
               f"against {loaded.source['name']}: {len(loaded.edits)} edit(s)")  # fmt: skip
    click.echo(diff_view(loaded, tensors))
    for note in loaded.notes:
        click.echo(f"note: {note}")


def _guarded(invoke, debug: bool) -> int:
    """Run the command; map every kind of failure to one line on stderr and an exit code."""
    try:
        code = invoke()
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path} --help" if exc.ctx else "convdiff --help"
        click.echo(f"error: {exc.format_message()} (see {where})", err=True)
        code = 2
    except (click.Abort, KeyboardInterrupt):
        click.echo("error: interrupted; the partial report is kept in the run folder", err=True)
        code = 3
    except ConvdiffError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    except Exception as exc:  # a bug of convdiff, not of the user or a converter
        if debug:
            traceback.print_exc()
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            err=True,
        )
        code = EXIT_INTERNAL
    return int(code or 0)


def main() -> None:
    """Console entry point."""
    cli.main()


if __name__ == "__main__":
    main()
