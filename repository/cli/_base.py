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
from repository.manager import OtaRepository

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self, repo_dir: Path, debug: bool, lock_timeout: float) -> None:
        self.repo_dir = repo_dir
        self.debug = debug
        self.lock_timeout = lock_timeout

    def open(self) -> OtaRepository:
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


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: library errors become one line on stderr and exit code 1."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="ota-repo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ota-repo: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        if debug:
            raise
        click.echo(f"ota-repo: {e.format_message()}", err=True)
        sys.exit(1 if e.exit_code != 2 else 2)
    except RepositoryError as e:
        if debug:
            raise
        click.echo(f"ota-repo: {e}", err=True)
        sys.exit(1)
    except OSError as e:
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"ota-repo: {e.strerror or e}{where}", err=True)
        sys.exit(1)
    except Exception as e:
        if debug:
            raise
        click.echo(f"ota-repo: unexpected error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
    sys.exit(0)
