"""`ota-publish add`: a firmware image (and its deltas) into the publisher's delegated role.

The publisher signs the role's next version with their own key. Before anything is signed, every
target path must fall inside the role's delegation; before anything is written, the signed
version passes the same check the server applies (`validate_delegated_update`: the delegator's
keys and threshold, exactly the next version, not expired, paths inside the delegation) and
stays inside the repository's limits (`repository.limits`). Then target files, the role,
snapshot and timestamp are written in that order under the writer lock; a failure before the
role is written removes the target files this publish stored.

Every file is read once, into a private copy (`repository.publisher.inputs`): what is hashed,
signed, stored or uploaded is that copy.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, TargetFile, Targets

from repository import hashbins
from repository.delegations import validate_delegated_update
from repository.errors import BadInputError, ThresholdError
from repository.keys import find_signer
from repository.limits import DEVICE_MAX_SECURITY_COUNTER, Limits
from repository.manager import OtaRepository
from repository.publisher.cli import cli, target_options
from repository.publisher.firmware import FirmwareRelease, add_new_targets, describe_file
from repository.publisher.inputs import private_copies
from repository.signing import SigningRequest
from repository.staging import next_version, stage
from repository.targetfiles import published_path, store_target_file


def delegated_paths(repo: OtaRepository, role: str) -> Any:
    """The DelegatedRole of `role` in the published targets.

    Raises:
        BadInputError: targets does not delegate `role` by name.
    """
    targets = repo.current_metadata(Targets.type).signed
    assert isinstance(targets, Targets)
    roles = targets.delegations.roles if targets.delegations else None
    if not roles or role not in roles:
        raise BadInputError(f"unknown role {role!r}: targets does not delegate to it")
    return roles[role]


def check_published_role(repo: OtaRepository, role: str) -> None:
    """Refuse to build on a published version its delegation's keys did not sign.

    Raises:
        BadInputError: the published version was written by someone else (a revoked key, or a
            compromised server); the security team resets it with `ota-repo rotate --clear-targets`.
    """
    if not repo.has_role(role):
        return
    current = repo.current_metadata(role)
    try:
        repo.current_metadata(Targets.type).verify_delegate(role, current)
    except UnsignedMetadataError as e:
        raise BadInputError(
            f"published {role} v{current.signed.version} is not signed by the keys its "
            "delegation lists (revoked key or tampering): not building on it; the security team "
            f"resets it with 'ota-repo rotate {role} --clear-targets'"
        ) from e


def build_updates(
    repo: OtaRepository, role: str, uri: str, files: list[tuple[Path, str, dict[str, Any]]]
) -> tuple[dict[str, Metadata[Targets]], list[TargetFile]]:
    """The next version of every role that lists `files`: `role` itself, or, when `role`
    delegates to hash bins, each bin a path falls in (usually one); each signed with `uri`.

    Raises:
        BadInputError, KeyError_: as `build_update`.
    """
    bins = hashbins.bins_of(repo.targets(role)) if repo.has_role(role) else None
    if bins is None:
        single, infos = build_update(repo, role, uri, files)
        return {role: single}, infos
    _check_inside(repo, role, [p for _, p, _ in files])
    signer = find_signer(uri, repo.keys_for(role))
    check_published_role(repo, role)
    infos = [describe_file(local, path, custom) for local, path, custom in files]
    updates: dict[str, Metadata[Targets]] = {}
    limits = Limits.from_config(repo.config.extra)
    for name, paths in sorted(hashbins.group_by_bin(repo, role, [i.path for i in infos]).items()):
        _check_bin(repo, role, name)
        md: Metadata[Targets] = next_version(repo, name)
        limits.check_expiry(md.signed.expires, repo.now, f"{name} v{md.signed.version}")
        add_new_targets(md.signed, [i for i in infos if i.path in paths])
        md.sign(signer, append=True)
        updates[name] = md
    return updates, infos


def _check_inside(repo: OtaRepository, role: str, paths: list[str]) -> None:
    delegated = delegated_paths(repo, role)
    outside = [p for p in paths if not delegated.is_delegated_path(p)]
    if outside:
        raise BadInputError(
            f"{', '.join(outside)} is outside {role}'s delegation "
            f"({', '.join(delegated.paths or [])}): refused before signing"
        )


def _check_bin(repo: OtaRepository, role: str, name: str) -> None:
    """Refuse to build on a published bin that `role`'s bin keys did not sign."""
    if not repo.has_role(name):
        raise BadInputError(f"{role} delegates to {name}, which has no published metadata")
    try:
        repo.current_metadata(role).verify_delegate(name, repo.current_metadata(name))
    except UnsignedMetadataError as e:
        raise BadInputError(
            f"published {name} is not signed by {role}'s keys (tampering): not building on it; "
            f"the security team resets it with 'ota-repo rotate {role} --clear-targets'"
        ) from e


def build_update(
    repo: OtaRepository, role: str, uri: str, files: list[tuple[Path, str, dict[str, Any]]]
) -> tuple[Metadata[Targets], list[TargetFile]]:
    """The role's next version with `files` added, signed with the key at `uri`.

    Raises:
        BadInputError: unknown role, a target outside the delegation, a path published already,
            or an expiry beyond the repository's limits (all checked before signing).
        KeyError_: the key at `uri` is not one of the role's keys.
    """
    _check_inside(repo, role, [p for _, p, _ in files])
    signer = find_signer(uri, repo.keys_for(role))
    check_published_role(repo, role)
    infos = [describe_file(local, path, custom) for local, path, custom in files]
    md: Metadata[Targets] = next_version(repo, role)
    Limits.from_config(repo.config.extra).check_expiry(
        md.signed.expires, repo.now, f"{role} v{md.signed.version}"
    )
    add_new_targets(md.signed, infos)
    md.sign(signer, append=True)
    return md, infos


def publish_local(
    repo: OtaRepository, role: str, uri: str, files: list[tuple[Path, str, dict[str, Any]]]
) -> tuple[str, Metadata[Targets], SigningRequest | None]:
    """Sign and publish `files` in `role` of the local repository `repo`; returns the role
    that lists the image (`role`, or the hash bin of `role` it falls in) and its new version.

    If the role needs more signatures than this key's (threshold above 1), the files are
    stored and the signed version is staged as a signing request instead (returned second):
    the other key holders sign it with `ota-repo sign`, then `ota-repo publish` publishes it.

    Raises:
        BadInputError: as `build_update`, or the signed version fails validation; nothing is
            written.
    """
    with repo.writing("publish") as details:
        updates, infos = build_updates(repo, role, uri, files)
        staged = False
        for name, update in updates.items():
            try:
                validate_delegated_update(repo, name, update)
            except ThresholdError:
                staged = True  # every other check passed: only signatures are missing
        with _removed_unless_kept(repo, infos) as keep:
            for (local, path, custom), expected in zip(files, infos, strict=True):
                stored = store_target_file(repo.paths.targets, local, path, custom)
                if stored.hashes != expected.hashes or stored.length != expected.length:
                    raise BadInputError(f"{local}: the file changed while it was read: try again")
            listed_in = next(n for n, u in updates.items() if files[0][1] in u.signed.targets)
            md = updates[listed_in]
            if staged:
                req = stage(repo, dict(updates))
                keep()
                return listed_in, md, req
            for name, update in sorted(updates.items()):
                repo.write(name, update)
            keep()
        repo.publish_snapshot_and_timestamp()
        details["role"] = role
        details["targets_added"] = [tf.path for tf in infos]
        if role not in updates:
            details["bins"] = sorted(updates)
    return listed_in, md, None


@contextlib.contextmanager
def _removed_unless_kept(
    repo: OtaRepository, infos: list[TargetFile]
) -> Iterator[Callable[[], None]]:
    """Remove the files of `infos` that are not in `targets/` yet unless the block calls the
    `keep()` it is given: a publish that fails half-way leaves no orphan behind."""
    new = [p for p in (published_path(repo.paths.targets, tf) for tf in infos) if not p.exists()]
    kept = False

    def keep() -> None:
        nonlocal kept
        kept = True

    try:
        yield keep
    finally:
        if not kept:
            for path in new:
                path.unlink(missing_ok=True)


def needs_signatures(role: str, repo_dir: Path | None, req: SigningRequest) -> str:
    """What the other key holders of `role` do with the request staged for them."""
    where = f"ota-repo --repo {repo_dir}"
    return (
        f"{role} needs more signatures: staged request {req.id}; the other holders review it "
        f"with '{where} request show {req.id}', sign with '{where} sign {req.id} --key URI "
        f"--expect HASH', then '{where} publish {req.id}'"
    )


@cli.command("add")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--hwid", required=True, help="Hardware model id, e.g. model-x.")
@click.option("--version", "version", required=True, help="Firmware version, e.g. 1.4.2.")
@click.option("--security-counter", type=int, default=0, show_default=True)
@click.option(
    "--max-security-counter",
    type=click.IntRange(1, DEVICE_MAX_SECURITY_COUNTER),
    help="With --server: the highest counter to sign (default 2147483647; raise it only as far "
    "as the server's limits.max_security_counter).",
)
@click.option(
    "--delta-from",
    "deltas",
    multiple=True,
    type=(str, click.Path(path_type=Path)),
    metavar="VERSION FILE",
    help="A delta that rebuilds this image from VERSION (repeat).",
)
@click.option("--name", default="fw", show_default=True, help="Image name in the target path.")
@target_options
@click.option("--json", "as_json", is_flag=True)
def add(
    file: Path,
    hwid: str,
    version: str,
    security_counter: int,
    max_security_counter: int | None,
    deltas: tuple[tuple[str, Path], ...],
    name: str,
    role: str,
    uri: str,
    repo_dir: Path | None,
    server_url: str | None,
    trusted_root: Path | None,
    token_file: Path | None,
    ca_bundle: Path | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """Publish firmware FILE for hardware model --hwid in your delegated --role."""
    if (repo_dir is None) == (server_url is None):
        raise click.UsageError("give exactly one of --repo DIR or --server URL")
    if repo_dir is not None and max_security_counter is not None:
        raise click.UsageError(
            "--max-security-counter is for --server: with --repo the repository's limits apply"
        )
    release = FirmwareRelease(file, hwid, version, security_counter, list(deltas), name)
    files = release.files()
    repo = OtaRepository.load(repo_dir) if repo_dir is not None else None
    if repo is not None:
        limits = Limits.from_config(repo.config.extra)
    else:
        limits = Limits(max_security_counter=max_security_counter or Limits().max_security_counter)
    limits.check_security_counter(security_counter, "--security-counter")
    with private_copies(files) as copies:  # from here on, only the copies are read
        if repo is not None:
            listed_in, md, req = publish_local(repo, role, uri, copies)
            if req is not None:
                click.echo(needs_signatures(role, repo_dir, req))
                return
            where = str(repo_dir)
        else:
            from repository.publisher.remote import publish_remote  # needs the server's client

            assert server_url is not None
            listed_in, md = publish_remote(
                server_url,
                role,
                uri,
                copies,
                trusted_root=trusted_root,
                metadata_url=metadata_url,
                token_file=token_file,
                ca_bundle=ca_bundle,
            )
            where = server_url
    paths = [p for _, p, _ in files]
    if as_json:
        out: dict[str, Any] = {"role": role, "version": md.signed.version, "targets": paths}
        if listed_in != role:
            out["bin"] = listed_in  # the version is the bin's
        click.echo(json.dumps(out))
    else:
        click.echo(f"published {', '.join(paths)} in {listed_in} v{md.signed.version} ({where})")
