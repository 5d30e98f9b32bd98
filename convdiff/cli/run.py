"""`convdiff run`: parse, call :func:`convdiff.commands.followup.run`, print, exit code."""

from __future__ import annotations

from pathlib import Path

import click

from convdiff.cli import options as shared
from convdiff.core.options import DEFAULT_STREAM_BATCH


@click.command("run")
@click.argument("model")
@click.option(
    "--src", type=shared.frameworks_choice(), help="Source framework (zoo models need it)."
)
@click.option("--dst", type=shared.frameworks_choice(), required=True, help="Target framework.")
@click.option("--via", default="", help="Force intermediate frameworks, e.g. onnx or onnx,keras.")
@click.option(
    "--weights",
    default="auto",
    show_default=True,
    help="auto | imagenet | random | PATH to a weights file (zoo models).",
)
@shared.seed_option("Seed of random weights and of --sample's pick.")
@shared.image_options
@shared.converter_options
@shared.preprocessing_options
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
@shared.timeout_option
@shared.batch_size_option
@click.option(
    "--stream-batch",
    default=DEFAULT_STREAM_BATCH,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images decoded and fed to every model per step; memory grows with it, and an "
    "interrupted run with the same --out resumes at its first unfinished step.",
)
@click.option(
    "--keep-inputs",
    is_flag=True,
    help="Keep the preprocessed images in the run folder (inputs/x-<name>.npy, 0.6 MB per "
    "224x224 image); by default only each hop's per-image results are kept.",
)
@click.option(
    "--keep-outputs",
    is_flag=True,
    help="Keep every model's whole outputs (outputs/y-<hop>-<framework>.npy, 4 KB per image "
    "for 1000 classes); by default each hop keeps per-image top-5 labels and scores.",
)
@shared.trust_option
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
def command(ctx: click.Context, model: str, via: str, quiet: bool, **options: object) -> None:
    """Convert MODEL (zoo name or model file) and compare source and target on images."""
    from convdiff.commands.followup import run
    from convdiff.commands.run.render import summary
    from convdiff.commands.run.types import RunConfig
    from convdiff.core.progress import Progress

    config = RunConfig(
        model=model,
        src=options["src"],
        dst=options["dst"],
        via=shared.split(via),
        weights=options["weights"],
        **shared.images(options),
        convert=shared.convert_options(options),
        **shared.preprocessing(options),
        max_discrepancy=options["max_discrepancy"],
        out=options["out"],
        cache_dir=options["cache_dir"],
        use_cache=not options["no_cache"],
        timeout=options["timeout"],
        batch_size=options["batch_size"],
        stream_batch=options["stream_batch"],
        keep_inputs=bool(options["keep_inputs"]),
        keep_outputs=bool(options["keep_outputs"]),
        trust_model_code=options["trust_model_code"],
        localize=bool(options["localize"]),
        repair=bool(options["repair"]),
    )
    report = run(config, Progress(enabled=not quiet))
    click.echo(summary(report))
    ctx.exit(report.exit_code)
