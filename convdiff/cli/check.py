"""`convdiff check`: parse, call :func:`convdiff.commands.check.flow.run_check`, print."""

from __future__ import annotations

from pathlib import Path

import click

from convdiff.cli import options as shared


@click.command("check")
@click.argument("config_file", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Check folder (default ./convdiff-check/TIME)."
)
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Converted-model cache.")
@click.option("--quiet", is_flag=True, help="No progress lines, only one line per conversion.")
@click.option("--localize", is_flag=True, help="Name the top localized finding of each FAIL.")
@shared.executor_options
@click.pass_context
def command(
    ctx: click.Context,
    config_file: Path,
    junit: Path | None,
    out: Path | None,
    cache_dir: Path | None,
    quiet: bool,
    localize: bool,
    executor: str,
    address: str | None,
) -> None:
    """Run every conversion of a TOML CONFIG and judge it against its thresholds (for CI)."""
    from convdiff.commands.check.config import CheckConfigError, load_check_config
    from convdiff.commands.check.flow import run_check
    from convdiff.commands.check.render import entry_line, summary

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
        on_result=lambda entry: click.echo(entry_line(entry)),
        localize=localize,
        executor=executor,
        address=address,
    )
    click.echo(summary(result))
    ctx.exit(result.exit_code)
