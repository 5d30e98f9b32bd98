"""`convdiff patch apply|show`: read and apply the patches `convdiff repair` writes."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("patch")
def group() -> None:
    """Read and apply repair patches (patch.json + patch.npz, written by `convdiff repair`)."""


@group.command("apply")
@click.argument("patch_file", metavar="PATCH.json", type=click.Path(path_type=Path))
@click.argument("target_model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.pass_context
def patch_apply(ctx: click.Context, patch_file: Path, target_model: Path, output: Path) -> None:
    """Apply PATCH.json to TARGET_MODEL (the very file it was planned for), writing OUTPUT
    (exit 0 edits applied and the model loads; 1 no edit applied)."""
    from convdiff.repair.appliers.apply import apply_patch

    result = apply_patch(patch_file, target_model, output, verify=True)
    click.echo(f"applied {len(result.applied)} edit(s) to {target_model.name}: {result.out}")
    for skipped in result.skipped:
        click.echo(f"  not applied: {skipped.edit.layer}.{skipped.edit.field}: {skipped.reason}")
    ctx.exit(0 if result.applied else 1)


@group.command("show")
@click.argument("patch_file", metavar="PATCH.json", type=click.Path(path_type=Path))
def patch_show(patch_file: Path) -> None:
    """Print PATCH.json as a readable diff, one line per edit."""
    from convdiff.repair.patch import Patch, diff_view

    loaded, tensors = Patch.load(patch_file)
    click.echo(
        f"patch for {loaded.target['name']} ({loaded.target['format']}), planned against "
        f"{loaded.source['name']}: {len(loaded.edits)} edit(s)"
    )
    click.echo(diff_view(loaded, tensors))
    for note in loaded.notes:
        click.echo(f"note: {note}")
