"""Changes to offline roles, each staged as a signing request: rotate keys, renew, delegate,
revoke, hash bins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from repository import delegations, hashbins, rotation
from repository.cli._base import Context, cli, pass_ctx
from repository.cli._reqfmt import (
    EXPORT,
    PUBLISH,
    SIGN_WITH,
    add_extra_signers,
    extend_roles,
    finish,
    pub_keys,
)
from repository.keys import public_key_from_file
from repository.layout import TOP_LEVEL_ROLES
from repository.signing import SigningRequest

_PUB = click.Path(dir_okay=False, path_type=Path)


@cli.command("rotate")
@click.argument("role")
@click.option("--add-key", "add", multiple=True, type=_PUB, help="Public key file to add (repeat).")
@click.option(
    "--remove-key",
    "remove",
    multiple=True,
    help="Public key file, keyid or 8+ hex digit keyid prefix to remove (repeat).",
)
@click.option("--threshold", type=int, help="New threshold of ROLE.")
@click.option("--uri", "online_uri", help="Signer URI of a new snapshot/timestamp key (server).")
@click.option(
    "--clear-targets", is_flag=True, help="Delegated role: drop its targets (after a compromise)."
)
@click.option("--allow-single-root-key", is_flag=True, help="Accept a root threshold of 1.")
@SIGN_WITH
@EXPORT
@PUBLISH
@pass_ctx
def rotate_cmd(
    ctx: Context,
    role: str,
    add: tuple[Path, ...],
    remove: tuple[str, ...],
    threshold: int | None,
    online_uri: str | None,
    clear_targets: bool,
    allow_single_root_key: bool,
    sign_with: tuple[str, ...],
    export_to: Path | None,
    publish_now: bool,
) -> None:
    """Add or remove keys of ROLE or change its threshold (a signing request).

    For root, targets, snapshot and timestamp this is a new root version (root needs both the
    previous and the new root's threshold); for a delegated role, a new targets version (and,
    if the role has hash bins, every bin re-signed by the role's new keys).
    """
    repo = ctx.open()
    keys = pub_keys(add)
    remove = tuple(public_key_from_file(Path(r)).keyid if Path(r).is_file() else r for r in remove)
    add_extra_signers(repo, sign_with, keys)
    if role == hashbins.BIN_PREFIX:
        raise click.ClickException(hashbins.ONLINE_BINS_NEW)
    if role in TOP_LEVEL_ROLES:
        if clear_targets:
            raise click.UsageError("--clear-targets applies to delegated roles only")

        def make() -> SigningRequest:
            return rotation.change_top_level_keys(
                repo,
                role,
                add=keys,
                remove=remove,
                threshold=threshold,
                online_uri=online_uri,
                allow_single_root_key=allow_single_root_key,
            )

    else:
        if online_uri:
            raise click.UsageError("--uri applies to snapshot and timestamp keys only")
        extend_roles(repo, [role, *_bins_of_role(repo, role)])

        def make() -> SigningRequest:
            return delegations.change_keys(
                repo,
                role,
                add=keys,
                remove=remove,
                threshold=threshold,
                clear_targets=clear_targets,
            )

    finish(
        repo, make, publish_now, export_to=export_to, allow_single_root_key=allow_single_root_key
    )


@cli.command("renew")
@click.argument("role")
@click.option("--days", type=int, help="New expiry period of ROLE, in days, from now on.")
@SIGN_WITH
@EXPORT
@PUBLISH
@pass_ctx
def renew_cmd(
    ctx: Context,
    role: str,
    days: int | None,
    sign_with: tuple[str, ...],
    export_to: Path | None,
    publish_now: bool,
) -> None:
    """Re-sign an offline ROLE with a fresh expiry (a signing request)."""
    repo = ctx.open()
    add_extra_signers(repo, sign_with, [])
    finish(repo, lambda: rotation.renew(repo, role, days=days), publish_now, export_to=export_to)


@cli.command("delegate")
@click.argument("role")
@click.option(
    "--paths",
    "paths",
    multiple=True,
    required=True,
    help="Path pattern, e.g. 'firmware/model-x/*'.",
)
@click.option("--key", "key_files", multiple=True, required=True, type=_PUB, help="Publisher key.")
@click.option("--threshold", type=int, default=1, show_default=True)
@click.option(
    "--terminating/--no-terminating",
    default=True,
    show_default=True,
    help="Stop a device's search at this role for matching paths, so no other delegation "
    "can supply an image for them.",
)
@click.option(
    "--bins",
    type=int,
    help="Delegate all of ROLE's paths on to N hash bins (a power of two) signed by ROLE's own "
    "keys: for very many targets, one publish re-signs one bin.",
)
@SIGN_WITH
@EXPORT
@PUBLISH
@pass_ctx
def delegate_cmd(
    ctx: Context,
    role: str,
    paths: tuple[str, ...],
    key_files: tuple[Path, ...],
    threshold: int,
    terminating: bool,
    bins: int | None,
    sign_with: tuple[str, ...],
    export_to: Path | None,
    publish_now: bool,
) -> None:
    """Delegate path PATTERNS to a publisher's ROLE (a signing request on targets, with ROLE's
    first, empty version for the publisher's key to sign).

    A '*' matches within one path segment: 'firmware/model-x/*', not 'firmware/*'.
    With --bins N the request also carries ROLE's N empty bins (`ROLE-bins-<hex>`), which the
    publisher signs with the role.
    """
    repo = ctx.open()
    keys = [public_key_from_file(p) for p in key_files]
    add_extra_signers(repo, sign_with, keys)
    extend_roles(repo, [role, *(hashbins.bin_names(role, bins) if bins is not None else [])])
    warnings: list[str] = []

    def make() -> SigningRequest:
        req, found = delegations.delegate(
            repo,
            role,
            paths=paths,
            keys=keys,
            threshold=threshold,
            terminating=terminating,
            bins=bins,
        )
        warnings.extend(found)
        return req

    finish(repo, make, publish_now, warnings, export_to)


@cli.command("revoke")
@click.argument("role")
@SIGN_WITH
@EXPORT
@PUBLISH
@pass_ctx
def revoke_cmd(
    ctx: Context, role: str, sign_with: tuple[str, ...], export_to: Path | None, publish_now: bool
) -> None:
    """Remove the delegation to ROLE: its metadata and keys stop counting (a signing request)."""
    repo = ctx.open()
    add_extra_signers(repo, sign_with, [])
    finish(repo, lambda: delegations.revoke(repo, role), publish_now, export_to=export_to)


@cli.command("hash-bins")
@click.argument("bins", type=int, required=False)
@click.option(
    "--off", is_flag=True, help="Stop targets delegating to its online-keyed bins (migration)."
)
@SIGN_WITH
@EXPORT
@PUBLISH
@pass_ctx
def hash_bins_cmd(
    ctx: Context,
    bins: int | None,
    off: bool,
    sign_with: tuple[str, ...],
    export_to: Path | None,
    publish_now: bool,
) -> None:
    """Bins delegated by targets are refused: their online key could approve firmware. Use
    'ota-repo delegate ROLE ... --bins N'. --off stages targets without the bins a repository
    made by an earlier release delegates to (a signing request on targets)."""
    if not off:
        raise click.ClickException(hashbins.ONLINE_BINS_NEW)
    if bins is not None:
        raise click.UsageError("--off takes no bin count")
    repo = ctx.open()
    add_extra_signers(repo, sign_with, [])
    finish(repo, lambda: hashbins.disable(repo), publish_now, export_to=export_to)


def _bins_of_role(repo: Any, role: str) -> list[str]:
    """The bins `role` delegates to (published), so a key change can sign them."""
    if not repo.has_role(role):
        return []
    found = hashbins.bins_of(repo.targets(role))
    return list(found.get_roles()) if found is not None else []
