"""`ota-publish`: the publisher's command line. Commands live in this package's modules."""

from __future__ import annotations

import importlib
import pkgutil
from typing import NoReturn

import click

import repository.publisher as _package
from repository.cli._base import run_cli


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
    """Entry point of `ota-publish`."""
    _register_commands()
    run_cli(cli, "ota-publish", argv)
