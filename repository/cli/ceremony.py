"""`ota-repo init-ceremony`: a production repository whose first root is a signing request."""

from __future__ import annotations

from pathlib import Path

import click

from repository import staging
from repository.ceremony import stage_init
from repository.cli._base import Context, cli, pass_ctx
from repository.cli._options import expiry_days, production_keys
from repository.cli._reqfmt import echo_request, review_lines
from repository.manager import OtaRepository
from repository.signing import threshold_states

_PUB = click.Path(dir_okay=False, path_type=Path)


@cli.command("init-ceremony")
@click.option("--root-key", "root_keys", multiple=True, required=True, type=_PUB)
@click.option("--root-threshold", type=int, default=2, show_default=True)
@click.option("--targets-key", "targets_keys", multiple=True, required=True, type=_PUB)
@click.option("--targets-threshold", type=int, default=1, show_default=True)
@click.option("--snapshot-key", required=True, type=_PUB, help="Online snapshot public key.")
@click.option("--snapshot-uri", required=True, help="Signer URI of the snapshot key (server).")
@click.option("--timestamp-key", required=True, type=_PUB, help="Online timestamp public key.")
@click.option("--timestamp-uri", required=True, help="Signer URI of the timestamp key (server).")
@click.option("--allow-single-root-key", is_flag=True)
@click.option("--expiry", multiple=True, metavar="ROLE=DAYS")
@click.option(
    "--export",
    "export_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the request to this file for the holders to sign.",
)
@pass_ctx
def init_ceremony(
    ctx: Context,
    root_keys: tuple[Path, ...],
    root_threshold: int,
    targets_keys: tuple[Path, ...],
    targets_threshold: int,
    snapshot_key: Path,
    snapshot_uri: str,
    timestamp_key: Path,
    timestamp_uri: str,
    allow_single_root_key: bool,
    expiry: tuple[str, ...],
    export_to: Path | None,
) -> None:
    """Stage root v1 and targets v1 from public keys; holders sign it each with their own key,
    then 'ota-repo publish' creates the repository. Nothing is published before that."""
    req = stage_init(
        ctx.repo_dir,
        **production_keys(
            root_keys,
            root_threshold,
            targets_keys,
            targets_threshold,
            {"snapshot": (snapshot_key, snapshot_uri), "timestamp": (timestamp_key, timestamp_uri)},
        ),
        allow_single_root_key=allow_single_root_key,
        expiry_days=expiry_days(expiry),
    )
    repo = OtaRepository.load(ctx.repo_dir)
    if export_to is not None:
        staging.export(repo, req.id, export_to)
        click.echo(f"exported {req.id} to {export_to}")
    echo_request(req, threshold_states(req, {}), review_lines(req, {}))
    click.echo(
        f"next: root and targets holders sign ('ota-repo sign {export_to or req.id} --key URI'), "
        f"then 'ota-repo publish {export_to or req.id}'"
    )
