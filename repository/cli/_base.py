"""The `ota-repo` group, shared options, and the one place errors become exit codes."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from repository.errors import RepositoryError
from repository.layout import RepoPaths
from repository.manager import OtaRepository
from repository.secretfiles import check_private_dir

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self, repo_dir: Path, debug: bool, lock_timeout: float) -> None:
        self.repo_dir = repo_dir
        self.debug = debug
        self.lock_timeout = lock_timeout

    def open(self) -> OtaRepository:
        check_private_dir(RepoPaths(self.repo_dir.resolve()).private)
        repo = OtaRepository.load(self.repo_dir)
        repo.lock_timeout = self.lock_timeout
        return repo


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--repo",
    "repo_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    envvar="OTA_REPO",
    show_default=True,
    help="Repository folder (holds metadata/, targets/ and the private .ota/).",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=120,
    show_default=True,
    help="Seconds to wait for another writer to finish.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, repo_dir: Path, lock_timeout: float, debug: bool) -> None:
    """Manage a secure-ota TUF repository."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context(repo_dir, debug, lock_timeout)


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def run_cli(group: click.Group, prog: str, argv: list[str] | None) -> NoReturn:
    """Run a click group as a program: every error becomes one line on stderr and exit code 1
    (2 for a usage error); a traceback only with --debug."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        group.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(1)
    except Exception as e:
        if debug:
            raise
        click.echo(f"{prog}: {describe(e)}", err=True)
        sys.exit(2 if isinstance(e, click.UsageError) else 1)
    sys.exit(0)


def describe(e: Exception) -> str:
    if isinstance(e, click.ClickException):
        return e.format_message()
    if isinstance(e, RepositoryError):
        return str(e)
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return f"unexpected error: {type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `ota-repo`."""
    run_cli(cli, "ota-repo", argv)
