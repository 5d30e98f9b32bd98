"""`convdiff localize` and `convdiff repair`: two model files and what running them needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from convdiff.cli import options as shared


def model_pair_options(command: Callable) -> Callable:
    """SOURCE_MODEL TARGET_MODEL and what running them on images needs."""
    return shared.apply(
        [
            click.argument("source_model", type=click.Path(path_type=Path)),
            click.argument("target_model", type=click.Path(path_type=Path)),
            click.option(
                "--src", type=shared.frameworks_choice(), help="Framework of SOURCE_MODEL."
            ),
            click.option(
                "--dst", type=shared.frameworks_choice(), help="Framework of TARGET_MODEL."
            ),
            shared.image_options,
            shared.seed_option("Seed of --sample's pick."),
            shared.preprocessing_options,
            click.option(
                "--target-preprocess",
                type=click.Choice(shared.PRESETS),
                help="inputs: the preset the target's framework customarily uses (default: the "
                "source's).",
            ),
            click.option(
                "--run-report",
                type=click.Path(path_type=Path),
                help="tools: a `convdiff run` report.json; names the hop that first lost "
                "agreement.",
            ),
            shared.batch_size_option,
            shared.trust_option,
            click.option("--out", type=click.Path(path_type=Path), help="Output folder."),
            shared.timeout_option,
            click.option("--quiet", is_flag=True, help="No progress lines."),
        ],
        command,
    )


def localize_config(options: dict[str, Any], stages: tuple[str, ...]) -> Any:
    """The :class:`~convdiff.commands.localize.types.LocalizeConfig` click parsed."""
    from convdiff.commands.localize.types import LocalizeConfig

    return LocalizeConfig(
        source=str(options["source_model"]),
        target=str(options["target_model"]),
        src=options["src"],
        dst=options["dst"],
        stages=stages,
        out=options["out"],
        timeout=options["timeout"],
        **shared.images(options),
        **shared.preprocessing(options),
        target_preprocess=options["target_preprocess"],
        run_report=options["run_report"],
        batch_size=options["batch_size"],
        trust_model_code=options["trust_model_code"],
    )


@click.command("localize")
@model_pair_options
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
    from convdiff.commands.localize.flow import localize as run_localize
    from convdiff.commands.localize.render import summary
    from convdiff.core.progress import Progress

    config = localize_config(options, shared.split(stages))
    report = run_localize(config, Progress(enabled=not quiet))
    click.echo(summary(report))
    if report.error:
        click.echo(f"error: {report.error}", err=True)
    ctx.exit(report.exit_code)


@click.command("repair")
@model_pair_options
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
    from convdiff.commands.repair.flow import repair as run_repair
    from convdiff.commands.repair.render import summary
    from convdiff.commands.repair.types import RepairConfig
    from convdiff.core.progress import Progress
    from convdiff.stages.findings import STAGES

    config = RepairConfig(localize_config(options, STAGES), output, options["out"])
    report = run_repair(config, Progress(enabled=not quiet))
    click.echo(summary(report))
    ctx.exit(report.exit_code)
