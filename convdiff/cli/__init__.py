"""The command line: parse options into a config, call the library, print, set the exit code.

One module per command (``cli/run.py`` ...); this one holds the group and the mapping of every
failure to one line and an exit code.

Exit codes: 0 agreement within the threshold, 1 discrepancy above it, 2 bad usage or input,
3 a converter or runtime crashed (or the run stopped early), 4 an internal error of convdiff.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

import click

from convdiff.cli import check, env, localize, patch, run, table
from convdiff.core.errors import ConvdiffError
from convdiff.runtime.pool import WorkerPool

EXIT_INTERNAL = 4
# a full disk, a quota, a read-only filesystem: the machine's state, not convdiff's bug
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class _Cli(click.Group):
    """A group whose errors are one line each, also under click's CliRunner."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        with _terminations_interrupt():
            code = _guarded(
                lambda: super(_Cli, self).main(
                    args=args, prog_name=prog_name or "convdiff", standalone_mode=False, **extra
                ),
                debug="--debug" in args,
            )
        if standalone_mode:
            sys.exit(code)
        return code


@contextlib.contextmanager
def _terminations_interrupt() -> Iterator[None]:
    """SIGTERM (``timeout``, a CI job cancelled) and SIGHUP (the terminal closed) end a command
    as Ctrl-C does: every worker's process group is killed at once, the command keeps its
    partial report, and the exit code is 3. Workers run in sessions of their own, so without
    this they would run on alone (a 3 GB tf2onnx worker for seconds more)."""

    def interrupt(signum: int, frame: object) -> None:
        WorkerPool.kill_all()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; a caller there handles them
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.group(name="convdiff", cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="convdiff")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """convdiff: find, explain and repair what model converters break."""
    ctx.obj = {"debug": debug}


cli.add_command(run.command)
cli.add_command(check.command)
cli.add_command(table.command)
cli.add_command(localize.localize)
cli.add_command(localize.repair)
cli.add_command(patch.group)
cli.add_command(env.group)


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
    except (click.Abort, KeyboardInterrupt) as exc:
        if isinstance(exc.__cause__, EOFError):  # click turns an EOFError into Abort
            return _internal(exc.__cause__, debug)
        click.echo("error: interrupted; the partial report is kept in the run folder", err=True)
        code = 3
    except ConvdiffError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _internal(exc, debug)
        if debug:
            traceback.print_exc()
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(
            f"error: {exc.strerror or exc}{where}; free some space or pass --out and "
            "--cache-dir on a disk that can be written",
            err=True,
        )
        code = 2
    except Exception as exc:  # a bug of convdiff, not of the user or a converter
        return _internal(exc, debug)
    return int(code or 0)


def _internal(exc: BaseException, debug: bool) -> int:
    """A bug of convdiff, not of the user or a converter: one line, exit 4."""
    if debug:
        traceback.print_exception(exc)
    click.echo(
        f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
        err=True,
    )
    return EXIT_INTERNAL


def main() -> None:
    """Console entry point."""
    cli.main()


if __name__ == "__main__":
    main()
