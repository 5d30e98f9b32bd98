"""`convdiff table`: parse, call :func:`convdiff.commands.table.flow.table`, print."""

from __future__ import annotations

from pathlib import Path

import click

from convdiff.cli import options as shared
from convdiff.core.options import TFLITE_OPTS


@click.command("table")
@click.option("--models", required=True, help="Comma-separated zoo names or model files.")
@click.option(
    "--frameworks",
    default="torch,keras,tf,tflite",
    show_default=True,
    help="Target columns; a zoo model's source rows are those of them the zoo offers.",
)
@shared.image_options
@click.option("--weights", default="auto", show_default=True, help="As for convdiff run.")
@shared.seed_option("Seed of random weights and of --sample's pick.")
@click.option(
    "--preprocess",
    type=click.Choice(["source", "target"]),
    default="source",
    show_default=True,
    help="Feed each target the source's tensor, or its own framework's customary one.",
)
@click.option("--tflite-opt", type=click.Choice(TFLITE_OPTS), default="none", show_default=True)
@click.option(
    "--converters",
    default="",
    help="Converter tools that get a column group of their own, e.g. onnx2tf,litert-torch "
    "(each target column again, converted with that tool where it is on the route).",
)
@click.option("--out", type=click.Path(path_type=Path), help="Table folder (resumable).")
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Cells running at once (local executor; on Ray the cluster's CPUs and memory decide).",
)
@click.option(
    "--max-memory",
    type=click.FloatRange(min=0, min_open=True),
    help="GB the running cells may use together (default: 75% of the machine's memory; "
    "local executor only).",
)
@shared.executor_options
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Converted-model cache.")
@shared.timeout_option
@click.option("--localize", is_flag=True, help="Name the top finding of each discrepancy cell.")
@click.option(
    "--localize-above",
    type=click.FloatRange(min=0),
    help="Also localize cells whose max |diff| exceeds this (implies --localize).",
)
@shared.trust_option
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.pass_context
def command(ctx: click.Context, models: str, frameworks: str, quiet: bool, **options: object):
    """Label-discrepancy table: every model x source x target framework, one run per cell."""
    from convdiff.commands.table.flow import table
    from convdiff.commands.table.render import to_markdown
    from convdiff.commands.table.types import TableConfig

    config = TableConfig(
        models=shared.split(models),
        frameworks=shared.split(frameworks, lower=True),
        out=options["out"],
        jobs=options["jobs"],
        max_memory_gb=options["max_memory"],
        preprocess=options["preprocess"],
        weights=options["weights"],
        **shared.images(options),
        tflite_opt=options["tflite_opt"],
        converters=shared.split(str(options["converters"])),
        cache_dir=options["cache_dir"],
        timeout=options["timeout"],
        localize=bool(options["localize"]) or options["localize_above"] is not None,
        localize_above=options["localize_above"],
        trust_model_code=options["trust_model_code"],
        executor=str(options["executor"]),
        address=options["address"],
    )
    report = table(config, quiet=quiet)
    click.echo(to_markdown(report), nl=False)
    click.echo(f"table: {Path(report.out_dir) / 'table.html'} (also .json, .csv, .md)")
    ctx.exit(report.exit_code)
