"""`ota-publish`: the publisher's command line. Commands live in this package's modules."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import NoReturn

import click

import repository.publisher as _package
from repository.errors import RepositoryError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Publish firmware for a hardware model with your delegated key."""
    ctx.obj = {"debug": debug}


def _register_commands() -> None:
    for module in pkgutil.iter_modules(_package.__path__):
        if module.name not in ("cli",) and not module.name.startswith("_"):
            importlib.import_module(f"{_package.__name__}.{module.name}")


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: errors become one line on stderr and exit code 1."""
    _register_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="ota-publish", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ota-publish: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        if debug:
            raise
        click.echo(f"ota-publish: {e.format_message()}", err=True)
        sys.exit(2 if isinstance(e, click.UsageError) else 1)
    except (RepositoryError, OSError) as e:
        if debug:
            raise
        click.echo(f"ota-publish: {e}", err=True)
        sys.exit(1)
    except Exception as e:
        if debug:
            raise
        click.echo(f"ota-publish: unexpected error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
    sys.exit(0)
