"""`ota-publish add --server`: build the role's next version from the server's *verified* state.

The publisher reads the server's metadata with a real ngclient from the root it trusts (never a
root downloaded on first use), so a server cannot slip targets into what the publisher signs.
The new version is signed here and uploaded with `repository.publisher.upload.upload_role`; the
server checks it with `validate_delegated_update` before it publishes anything.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.exceptions import RepositoryError as TufRepositoryError
from tuf.api.metadata import DelegatedRole, Metadata, SuccinctRoles, Targets
from tuf.ngclient import FetcherInterface, Updater

from repository.errors import BadInputError, RepositoryError
from repository.keys import find_signer
from repository.layout import DEFAULT_EXPIRY_DAYS
from repository.publisher.firmware import add_new_targets, describe_file
from repository.secretfiles import ROOT_LIMIT, SECRET_LIMIT, read_limited

_CHUNK = 256 * 1024


class _Fetcher(FetcherInterface):
    """Moves bytes for ngclient over HTTPS with the publisher's token and CA; judges nothing."""

    def __init__(self, token: str | None, ca_bundle: Path | None) -> None:
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._verify: str | bool = str(ca_bundle) if ca_bundle else True

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            resp = self._session.get(url, stream=True, timeout=30, verify=self._verify)
        except requests.RequestException as e:
            raise DownloadHTTPError(f"cannot reach {url}: {type(e).__name__}", 0) from e
        if resp.status_code != 200:
            resp.close()
            raise DownloadHTTPError(f"{url}: HTTP {resp.status_code}", resp.status_code)
        return resp.iter_content(_CHUNK)


@dataclass(frozen=True)
class ServerAccess:
    """What `--server` needs: the root the publisher trusts, the upload token, a fetcher for
    ngclient and where the metadata is read from."""

    bootstrap: bytes
    token: str | None
    fetcher: FetcherInterface
    metadata_url: str


def server_access(
    server_url: str,
    *,
    trusted_root: Path | None,
    token_file: Path | None,
    ca_bundle: Path | None,
    metadata_url: str | None,
) -> ServerAccess:
    """Read `--root` and `--token-file` as bounded regular files (the token owner-only).

    Raises:
        BadInputError: no trusted root, or a file that is missing, unsafe or unreadable.
    """
    if trusted_root is None:
        raise BadInputError("--server needs --root, the root.json you trust for this repository")
    try:
        bootstrap = read_limited(trusted_root, what="trusted root", limit=ROOT_LIMIT)
        token = None
        if token_file is not None:
            raw = read_limited(
                token_file, what="upload token file", limit=SECRET_LIMIT, private=True
            )
            token = raw.decode("ascii").strip()
    except OSError as e:
        raise BadInputError(f"cannot read {e.filename}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise BadInputError(f"upload token file {token_file} is not ASCII text") from None
    where = metadata_url or f"{server_url.rstrip('/')}/metadata/"
    return ServerAccess(bootstrap, token, _Fetcher(token, ca_bundle), where)


def current_role(
    metadata_url: str,
    role: str,
    paths: list[str],
    bootstrap: bytes,
    fetcher: FetcherInterface,
    verified_bins: dict[str, Metadata[Targets]] | None = None,
    *,
    every_bin: bool = False,
) -> tuple[Targets, Metadata[Targets] | None]:
    """The server's targets and current version of `role` (None: not yet), verified from
    `bootstrap`; refuses `paths` outside the delegation before anything is signed. When `role`
    delegates to hash bins, the current version of each bin a path falls in goes into
    `verified_bins` (of every bin with `every_bin`, where `paths` may be empty).

    Raises:
        RepositoryError: the server's metadata does not verify or cannot be read.
        BadInputError: `role` is not delegated, or a path is outside its delegation.
    """
    base = metadata_url.rstrip("/") + "/"
    verified_bins = {} if verified_bins is None else verified_bins
    with tempfile.TemporaryDirectory(prefix="ota-publish-") as tmp:
        updater = Updater(tmp, base, None, None, fetcher=fetcher, bootstrap=bootstrap)
        try:
            updater.refresh()
        except TufRepositoryError as e:
            raise RepositoryError(f"the server's metadata does not verify: {e}") from e
        except DownloadHTTPError as e:
            raise RepositoryError(f"cannot read the server's metadata: {e}") from e
        targets = Metadata[Targets].from_bytes((Path(tmp) / "targets.json").read_bytes())
        try:
            roles = targets.signed.delegations.roles if targets.signed.delegations else None
            if not roles or role not in roles:
                raise BadInputError(f"unknown role {role!r}: targets does not delegate to it")
            if every_bin:
                paths = [*paths, *probe_paths(roles[role], None)]
            outside = [p for p in paths if not roles[role].is_delegated_path(p)]
            if outside:
                raise BadInputError(
                    f"{', '.join(outside)} is outside {role}'s delegation "
                    f"({', '.join(roles[role].paths or [])}): refused before signing"
                )
            updater.get_targetinfo(paths[0])  # walks the delegation, verifying `role`
        except TufRepositoryError as e:
            if "does not contain information" in str(e):
                return targets.signed, None  # the role has no metadata yet: its first version
            raise RepositoryError(f"the server's metadata does not verify: {e}") from e
        except DownloadHTTPError as e:
            raise RepositoryError(f"cannot read the server's metadata: {e}") from e
        cached = Path(tmp) / f"{quote(role, '')}.json"
        if not cached.exists():
            raise BadInputError(f"{paths[0]} does not resolve to {role} at {metadata_url}")
        current = Metadata[Targets].from_bytes(cached.read_bytes())
        bins = current.signed.delegations.succinct_roles if current.signed.delegations else None
        if bins is not None and every_bin:
            paths = [*paths, *probe_paths(roles[role], bins)]
        if bins is not None:  # each path's bin, verified by ngclient's walk through `role`
            try:
                for path in paths:
                    updater.get_targetinfo(path)
            except (TufRepositoryError, DownloadHTTPError) as e:
                raise RepositoryError(f"the server's metadata does not verify: {e}") from e
            for name in sorted({bins.get_role_for_target(p) for p in paths}):
                data = (Path(tmp) / f"{quote(name, '')}.json").read_bytes()
                verified_bins[name] = Metadata[Targets].from_bytes(data)
        return targets.signed, current


MAX_PROBES_PER_BIN = 64


def probe_paths(delegated: DelegatedRole, bins: SuccinctRoles | None) -> list[str]:
    """Paths inside `delegated`'s patterns, one falling in every bin of `bins` (one path if
    None), so that verified lookups of them reach every bin. Nothing is listed under them.

    Raises:
        BadInputError: no such path can be made from the patterns (none has a plain `*`).
    """
    found: dict[str, str] = {}
    wanted = bins.number_of_bins if bins is not None else 1
    for pattern in [p for p in delegated.paths or [] if not any(c in p for c in "[]?")]:
        for i in range(MAX_PROBES_PER_BIN * wanted):
            if len(found) == wanted:
                break
            word = hashlib.sha256(str(i).encode()).hexdigest()[:12]
            path = pattern.replace("*", f".ota-renew-{word}")
            if path == pattern or not delegated.is_delegated_path(path):
                break  # no wildcard to fill, or the filled pattern does not match
            found.setdefault(str(bins.get_role_for_target(path)) if bins else "", path)
    if len(found) != wanted:
        raise BadInputError(
            f"cannot reach every bin of {delegated.name} through its paths "
            f"({', '.join(delegated.paths or [])}): renew it with --repo"
        )
    return list(found.values())


def publish_remote(
    server_url: str,
    role: str,
    uri: str,
    files: list[tuple[Path, str, dict[str, Any]]],
    *,
    trusted_root: Path | None,
    token_file: Path | None,
    ca_bundle: Path | None,
    metadata_url: str | None = None,
) -> tuple[str, Metadata[Targets]]:
    """Sign the next version of `role` with `files` added and upload it with the files; when
    `role` delegates to hash bins, of each bin a file falls in. Returns the role (or bin) that
    lists the image and its new version.

    The current metadata is read from `metadata_url` (default: the server's `metadata/`; a
    mirror or CDN works as well, since everything read is verified from `trusted_root`).

    Raises:
        BadInputError: no trusted root, unreadable files, or the upload is refused.
        KeyError_: the key at `uri` is not one of the role's keys.
    """
    from repository.publisher.upload import upload_role  # written with the server

    access = server_access(
        server_url,
        trusted_root=trusted_root,
        token_file=token_file,
        ca_bundle=ca_bundle,
        metadata_url=metadata_url,
    )
    bins: dict[str, Metadata[Targets]] = {}
    paths = [p for _, p, _ in files]
    targets, current = current_role(
        access.metadata_url, role, paths, access.bootstrap, access.fetcher, bins
    )
    assert targets.delegations is not None and targets.delegations.roles is not None
    delegated = targets.delegations.roles[role]
    keys = {k: targets.delegations.keys[k] for k in delegated.keyids}
    signer = find_signer(uri, keys)
    infos = {path: describe_file(local, path, custom) for local, path, custom in files}
    if bins:
        # one upload per touched bin (usually one); the image's bin last, so a device never
        # sees an image before the deltas it names
        succinct = (
            current.signed.delegations.succinct_roles
            if current and current.signed.delegations
            else None
        )
        assert succinct is not None
        image_bin = succinct.get_role_for_target(paths[0])
        order = sorted(bins, key=lambda n: (n == image_bin, n))
        uploads = [
            (n, bins[n], [p for p in paths if succinct.get_role_for_target(p) == n]) for n in order
        ]
    else:
        base = current if current is not None else Metadata(Targets(version=0))
        uploads = [(role, base, paths)]
    for name, md, listed in uploads:
        _next_version(md)
        add_new_targets(md.signed, [infos[p] for p in listed])
        md.sign(signer, append=True)
        upload_role(
            server_url,
            name,
            md.to_bytes(),
            {path: local for local, path, _ in files if path in listed},
            token=access.token,
            ca_bundle=ca_bundle,
        )
    return uploads[-1][0], uploads[-1][1]


def _next_version(md: Metadata[Targets]) -> None:
    md.signed.version += 1
    expiry = datetime.now(UTC) + timedelta(days=DEFAULT_EXPIRY_DAYS["targets"])
    md.signed.expires = expiry.replace(microsecond=0)
    md.signatures.clear()
