"""`ota-publish renew`: re-sign a publisher's role and every one of its hash bins with a fresh
expiry, one new version each, targets unchanged.

Nothing online may sign a publisher's role or its bins (that would let the server approve
firmware), so nothing online renews them: a bin no publish touched expires after its period
(default 90 days) and devices then refuse every image it lists. The publisher runs `renew`
before that (for example monthly), locally with `--repo` or through the server with `--server`
(one upload per role, each checked by the server as `ota-publish add`'s are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from tuf.api.metadata import Metadata, Targets

from repository import hashbins
from repository.delegations import validate_delegated_update
from repository.errors import BadInputError, ThresholdError
from repository.keys import find_signer
from repository.limits import Limits
from repository.manager import OtaRepository
from repository.publisher.cli import cli, target_options
from repository.publisher.local import _check_bin, check_published_role, needs_signatures
from repository.signing import SigningRequest
from repository.staging import next_version, stage


def renew_local(
    repo: OtaRepository, role: str, uri: str
) -> tuple[list[str], SigningRequest | None]:
    """Re-sign `role` and its bins in `repo` with the key at `uri`, then snapshot and timestamp.

    Returns:
        The roles re-signed (`role` first, then its bins), and a staged request when the role's
        threshold needs more signatures than this key's (nothing published then).

    Raises:
        BadInputError: `role` is not a publisher's role with published metadata, a published
            version is not signed by its keys, or an expiry beyond the repository's limits.
        KeyError_: the key at `uri` is not one of the role's keys.
    """
    with repo.writing("renew") as details:
        delegated = repo.targets().delegations
        if delegated is None or delegated.roles is None or role not in delegated.roles:
            raise BadInputError(f"unknown role {role!r}: targets does not delegate to it")
        if not repo.has_role(role):
            raise BadInputError(f"{role} has no published metadata: nothing to renew")
        signer = find_signer(uri, repo.keys_for(role))
        check_published_role(repo, role)
        bins = hashbins.bins_of(repo.targets(role))
        names = [role, *(bins.get_roles() if bins is not None else [])]
        limits = Limits.from_config(repo.config.extra)
        updates: dict[str, Metadata[Any]] = {}
        staged = False
        for name in names:
            if name != role:
                _check_bin(repo, role, name)
            md = next_version(repo, name)
            limits.check_expiry(md.signed.expires, repo.now, f"{name} v{md.signed.version}")
            md.sign(signer, append=True)
            try:
                validate_delegated_update(repo, name, md)
            except ThresholdError:
                staged = True  # every other check passed: only signatures are missing
            updates[name] = md
        if staged:
            return names, stage(repo, updates, note=f"{role}: renew the role and its bins")
        for name in names:
            repo.write(name, updates[name])
        repo.publish_snapshot_and_timestamp()
        details["role"] = role
        details["renewed"] = names
    return names, None


def renew_remote(
    server_url: str,
    role: str,
    uri: str,
    *,
    trusted_root: Path | None,
    token_file: Path | None,
    ca_bundle: Path | None,
    metadata_url: str | None = None,
) -> list[str]:
    """Re-sign `role` and every one of its bins from the server's verified state and upload
    each (the role first); returns the roles renewed.

    Raises:
        BadInputError: no trusted root, `role` unknown or without metadata, or an upload refused.
        RepositoryError: the server's metadata does not verify or cannot be read.
        KeyError_: the key at `uri` is not one of the role's keys.
    """
    from repository.publisher.remote import _next_version, current_role, server_access
    from repository.publisher.upload import upload_role

    access = server_access(
        server_url,
        trusted_root=trusted_root,
        token_file=token_file,
        ca_bundle=ca_bundle,
        metadata_url=metadata_url,
    )
    verified: dict[str, Metadata[Targets]] = {}
    targets, current = current_role(
        access.metadata_url, role, [], access.bootstrap, access.fetcher, verified, every_bin=True
    )
    if current is None:
        raise BadInputError(f"{role} has no published metadata: nothing to renew")
    assert targets.delegations is not None and targets.delegations.roles is not None
    delegated = targets.delegations.roles[role]
    keys = {k: targets.delegations.keys[k] for k in delegated.keyids}
    signer = find_signer(uri, keys)
    uploads = [(role, current), *sorted(verified.items())]
    for name, md in uploads:
        _next_version(md)
        md.sign(signer, append=True)
        upload_role(server_url, name, md.to_bytes(), {}, token=access.token, ca_bundle=ca_bundle)
    return [name for name, _ in uploads]


@cli.command("renew")
@target_options
def renew(
    role: str,
    uri: str,
    repo_dir: Path | None,
    server_url: str | None,
    trusted_root: Path | None,
    token_file: Path | None,
    ca_bundle: Path | None,
    metadata_url: str | None,
) -> None:
    """Re-sign your --role and every one of its hash bins with a fresh expiry (run it well
    before they expire: nothing online renews them)."""
    if (repo_dir is None) == (server_url is None):
        raise click.UsageError("give exactly one of --repo DIR or --server URL")
    if repo_dir is not None:
        names, req = renew_local(OtaRepository.load(repo_dir), role, uri)
        if req is not None:
            click.echo(needs_signatures(role, repo_dir, req))
            return
        where = str(repo_dir)
    else:
        assert server_url is not None
        names = renew_remote(
            server_url,
            role,
            uri,
            trusted_root=trusted_root,
            token_file=token_file,
            ca_bundle=ca_bundle,
            metadata_url=metadata_url,
        )
        where = server_url
    bins = f" and its {len(names) - 1} bins" if len(names) > 1 else ""
    click.echo(f"renewed {role}{bins} ({where})")
