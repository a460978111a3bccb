"""`ota-publish`: the publisher's command line. Commands live in this package's modules."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

import repository.publisher as _package
from repository.cli._base import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Publish firmware for a hardware model with your delegated key."""
    ctx.obj = {"debug": debug}


def target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every publishing command shares: the role, the key, and where to publish
    (`--repo DIR`, or `--server URL` with what it needs)."""
    options = [
        click.option("--role", required=True, help="Your delegated role, e.g. firmware-model-x."),
        click.option(
            "--key", "uri", required=True, help="Signer URI of your key (encfile:, hsm:, ...)."
        ),
        click.option("--repo", "repo_dir", type=click.Path(file_okay=False, path_type=Path)),
        click.option("--server", "server_url", help="Update server URL to upload to instead."),
        click.option(
            "--root", "trusted_root", type=click.Path(path_type=Path), help="With --server."
        ),
        click.option("--token-file", type=click.Path(path_type=Path), help="With --server."),
        click.option("--ca-bundle", type=click.Path(path_type=Path), help="With --server."),
        click.option(
            "--metadata-url",
            help="With --server: where to read the current metadata (default: the server's "
            "metadata/).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _register_commands() -> None:
    for module in pkgutil.iter_modules(_package.__path__):
        if module.name not in ("cli",) and not module.name.startswith("_"):
            importlib.import_module(f"{_package.__name__}.{module.name}")


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `ota-publish`."""
    _register_commands()
    run_cli(cli, "ota-publish", argv)
