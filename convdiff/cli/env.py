"""`convdiff env`: build and list the environments converter releases run in
(:mod:`convdiff.core.envs`)."""

from __future__ import annotations

import click

from convdiff.core import envs


@click.group("env")
def group() -> None:
    """Environments for converter releases that cannot share convdiff's own pins."""


@group.command("create")
@click.argument("requirement")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def create(requirement: str, quiet: bool) -> None:
    """Build the environment of REQUIREMENT: TOOL or TOOL==VERSION (e.g. onnx2tf,
    tf2onnx==1.16.1). A built one is kept and reused."""
    from convdiff.core.progress import Progress

    tool, version = envs.parse_requirement(requirement)
    name = f"{tool}=={version}"
    existing = envs.find_env(name)
    if existing is None:
        progress = Progress(enabled=not quiet)
        with progress.step(f"building the {name} environment with pip (minutes)") as step:
            existing = envs.ensure_env(name, on_tick=progress.tick)
            step.result = "built"
    else:
        click.echo(f"{name} is already built")
    click.echo(_line(existing))


@group.command("list")
def list_envs() -> None:
    """The environments built under $CONVDIFF_ENVS (default ~/.cache/convdiff/envs)."""
    found = envs.list_envs()
    if not found:
        click.echo(f"no environment built in {envs.env_root()}")
        click.echo(
            f"recipes: {', '.join(envs.known_tools())} (convdiff env create TOOL[==VERSION])"
        )
        return
    for env in found:
        click.echo(_line(env))


def _line(env: envs.ToolEnv) -> str:
    return f"{env.name}  python {env.python_version}  {len(env.packages)} packages  {env.path}"
