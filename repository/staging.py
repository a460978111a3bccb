"""Signing requests in a repository's private staging area: prepare, list, sign, import, publish.

Requests live in `.ota/staging/<id>.json`. Every load re-validates the file against the
*published* state (a staged file is no more trusted than an imported one). Publishing takes the
writer lock, refuses a request made stale by a newer published version, checks every threshold
with python-tuf, then writes delegated roles, targets, root, snapshot and timestamp in that order.
"""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from repository import audit
from repository.changes import describe, short
from repository.errors import BadInputError, KeyError_
from repository.fsutil import atomic_write
from repository.manager import OtaRepository, metadata_filename
from repository.signing import (
    REQUEST_ID,
    RoleChange,
    SigningRequest,
    ThresholdState,
    content_digest,
    sign,
    threshold_states,
    validate,
    verify_thresholds,
)

logger = logging.getLogger(__name__)
_ORDER = {Root.type: 0, Targets.type: 1}


def is_unpublished(repo: OtaRepository) -> bool:
    """A repository whose first root still waits for its holders (`init-ceremony`)."""
    return not (repo.paths.metadata / "1.root.json").exists()


def published_context(repo: OtaRepository) -> dict[str, Metadata[Any]]:
    """The delegators a request is checked against: the published root and targets."""
    if is_unpublished(repo):
        return {}
    return {r: repo.current_metadata(r) for r in (Root.type, Targets.type)}


def published_version(repo: OtaRepository, role: str) -> int:
    if is_unpublished(repo):
        return 0
    return repo.current_metadata(role).signed.version if repo.has_role(role) else 0


def next_version(repo: OtaRepository, role: str) -> Metadata[Any]:
    """A copy of the published `role` as its next version: version + 1, fresh expiry, unsigned."""
    md = repo.open(role)
    md.signed.version += 1
    days = repo.config.expiry_for(role)
    md.signed.expires = (repo.now + timedelta(days=days)).replace(microsecond=0)
    md.signatures.clear()
    return md


def _request_path(repo: OtaRepository, req_id: str) -> Path:
    if not REQUEST_ID.match(req_id):
        raise BadInputError(f"bad request id {req_id!r}")
    return repo.paths.staging / f"{req_id}.json"


def _sign_locally(repo: OtaRepository, req: SigningRequest, states: list[ThresholdState]) -> None:
    """Sign with every key this machine holds (config URIs and `extra_signers`)."""
    for change in req.changes:
        keys = {k: v for s in states if s.role == change.role for k, v in s.keys.items()}
        for signer in repo.signers_for(change.role, keys):
            if signer.public_key.keyid not in change.md.signatures:
                change.md.sign(signer, append=True)


def stage(
    repo: OtaRepository, new: dict[str, Metadata[Any]], *, note: str | None = None
) -> SigningRequest:
    """Turn new role versions into a staged signing request, signed with keys held here.

    Caller holds the writer lock (`repo.writing`).

    Raises:
        BadInputError: the change is inconsistent (e.g. a role the delegator does not list).
    """
    changes = sorted(
        (RoleChange(role, published_version(repo, role), md) for role, md in new.items()),
        key=lambda c: (_ORDER.get(c.role, 2), c.role),
    )
    summary = [note] if note else []
    for c in changes:
        old = repo.current_metadata(c.role).signed if repo.has_role(c.role) else None
        summary.extend(describe(c.role, old, c.md.signed))
    first = changes[0]
    req_id = f"{first.role}-v{first.md.signed.version}-{content_digest(changes)[:12]}"
    context = published_context(repo)
    for c in changes:  # the version each change replaces, so holders elsewhere see the diff
        if c.role not in context and c.base_version > 0:
            context[c.role] = repo.current_metadata(c.role)
    req = SigningRequest(
        req_id,
        datetime.now(UTC).isoformat(timespec="seconds"),
        audit.actor(),
        summary,
        changes,
        context,
    )
    states = validate(req, context)
    _sign_locally(repo, req, states)
    atomic_write(_request_path(repo, req.id), req.to_bytes(), mode=0o600)
    logger.info("staged signing request %s", req.id)
    return req


def load(repo: OtaRepository, req_id: str) -> SigningRequest:
    """Load and validate a staged request against the published state.

    Raises:
        BadInputError: unknown, malformed or tampered request.
    """
    path = _request_path(repo, req_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise BadInputError(
            f"no pending signing request {req_id!r} (see 'ota-repo requests')"
        ) from e
    req = SigningRequest.from_bytes(data, source=f"request {req_id}")
    if req.id != req_id:
        raise BadInputError(f"request file {path.name} holds request {req.id} (tampered?)")
    validate(req, context_for(repo, req))
    return req


def context_for(repo: OtaRepository, req: SigningRequest) -> dict[str, Metadata[Any]]:
    """The published delegators; for a stale request (it can only be shown and refused), the
    ones it was made against."""
    return req.context if stale_reason(repo, req) else published_context(repo)


def load_file(path: Path) -> SigningRequest:
    """Load a request file on its own (a key holder's machine), validated against the published
    metadata it carries as context.

    Raises:
        BadInputError: unreadable, malformed or tampered request file.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read request file {path}: {e.strerror}") from e
    req = SigningRequest.from_bytes(data, source=str(path))
    if Root.type not in req.context:
        raise BadInputError(f"{path}: request carries no root to check signatures against")
    validate(req, req.context)
    return req


def pending(repo: OtaRepository) -> list[tuple[SigningRequest | None, str, list[ThresholdState]]]:
    """Every staged request with its threshold states; a broken file is listed with its error."""
    result: list[tuple[SigningRequest | None, str, list[ThresholdState]]] = []
    for path in sorted(repo.paths.staging.glob("*.json")):
        try:
            req = load(repo, path.stem)
            states = threshold_states(req, context_for(repo, req))
            result.append((req, stale_reason(repo, req) or "", states))
        except BadInputError as e:
            result.append((None, f"{path.stem}: {e}", []))
    return result


def stale_reason(repo: OtaRepository, req: SigningRequest) -> str | None:
    for c in req.changes:
        now = published_version(repo, c.role)
        if now != c.base_version:
            return (
                f"{c.role} v{now} was published after this request was made "
                f"(it changes v{c.base_version}); prepare the change again"
            )
    return None


def sign_staged(repo: OtaRepository, req_id: str, uri: str) -> tuple[SigningRequest, list[str]]:
    """Add one holder's signature to a staged request.

    Raises:
        KeyError_: the key is not listed for the request's roles (nothing is recorded).
        BadInputError: unknown, stale or tampered request.
    """
    with repo.writing("sign-request"):
        req = load(repo, req_id)
        reason = stale_reason(repo, req)
        if reason:
            raise BadInputError(f"request {req_id} is stale: {reason}")
        roles = sign(req, uri, published_context(repo))
        atomic_write(_request_path(repo, req.id), req.to_bytes(), mode=0o600)
    return req, roles


def sign_file(path: Path, uri: str) -> tuple[SigningRequest, list[str]]:
    """Add one holder's signature to an exported request file, on any machine.

    Raises:
        KeyError_: the key is not listed for the request's roles (the file is not changed).
        BadInputError: unreadable, malformed or tampered file.
    """
    req = load_file(path)
    roles = sign(req, uri, req.context)
    atomic_write(path, req.to_bytes(), mode=0o600)
    return req, roles


def export(repo: OtaRepository, req_id: str, dest: Path) -> SigningRequest:
    """Write a staged request to `dest` (one file) for holders on other machines."""
    req = load(repo, req_id)
    atomic_write(dest, req.to_bytes(), mode=0o600)
    return req


def import_signatures(repo: OtaRepository, path: Path) -> tuple[SigningRequest, list[str]]:
    """Merge the signatures of a request file signed elsewhere into the staged request.

    The file may only add signatures: its id, roles, base versions and the signed bytes of every
    role must equal the staged request's, and each signature must be by a listed key and verify.

    Returns:
        The staged request and the keyids newly added.

    Raises:
        BadInputError: tampered, mismatched or unknown request; nothing is recorded.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read request file {path}: {e.strerror}") from e
    incoming = SigningRequest.from_bytes(data, source=str(path))
    with repo.writing("import-request"):
        local = load(repo, incoming.id)
        reason = stale_reason(repo, local)
        if reason:
            raise BadInputError(f"request {local.id} is stale: {reason}")
        same = [(c.role, c.base_version, c.md.signed_bytes) for c in incoming.changes] == [
            (c.role, c.base_version, c.md.signed_bytes) for c in local.changes
        ]
        if not same:
            raise BadInputError(
                f"{path} does not match staged request {local.id}: its content was changed"
            )
        validate(incoming, published_context(repo))  # every signature listed and valid
        added: list[str] = []
        for mine, theirs in zip(local.changes, incoming.changes, strict=True):
            for keyid, sig in theirs.md.signatures.items():
                if keyid not in mine.md.signatures:
                    mine.md.signatures[keyid] = sig
                    added.append(f"{mine.role}:{short(keyid)}")
        validate(local, published_context(repo))
        atomic_write(_request_path(repo, local.id), local.to_bytes(), mode=0o600)
    return local, added


def _check_online_signers(repo: OtaRepository, root: Root) -> None:
    for role in (Snapshot.type, Timestamp.type):
        keys = {k: root.keys[k] for k in root.roles[role].keyids}
        if len(repo.signers_for(role, keys)) < root.roles[role].threshold:
            raise KeyError_(
                f"this machine holds no signer for the {role} key(s) "
                f"{', '.join(short(k) for k in keys)} named by the new root: add its URI first "
                "('ota-repo key add-online')"
            )


def _first_snapshot_and_timestamp(repo: OtaRepository) -> None:
    """Version 1 of snapshot and timestamp, after a ceremony's root and targets v1."""
    snapshot = Metadata(Snapshot(meta={"targets.json": MetaFile(1)}))
    snapshot.signed.version = 0  # finalize() makes it 1
    repo.finalize(Snapshot.type, snapshot)
    repo.write(Snapshot.type, snapshot)
    timestamp = Metadata(Timestamp(snapshot_meta=MetaFile(1)))
    timestamp.signed.version = 0
    repo.finalize(Timestamp.type, timestamp)
    repo.write(Timestamp.type, timestamp)


def publish(repo: OtaRepository, req_id: str) -> SigningRequest:
    """Publish a fully signed request, then snapshot and timestamp with the online keys.

    Raises:
        BadInputError: unknown, tampered, stale or expired request.
        ThresholdError: a threshold is not met; nothing is written.
        KeyError_: the online keys cannot sign here; nothing is written.
    """
    from repository import hashbins  # publishing a hash-bin delegation creates the bins
    from repository.requestcheck import check_content

    with repo.writing("publish-request") as details:
        req = load(repo, req_id)
        reason = stale_reason(repo, req)
        if reason:
            raise BadInputError(f"request {req_id} is stale: {reason}")
        expired = [c.role for c in req.changes if c.md.signed.is_expired(repo.now)]
        if expired:
            raise BadInputError(
                f"request {req_id} has expired ({', '.join(expired)}): prepare it again"
            )
        verify_thresholds(req, published_context(repo))
        root_change = req.change(Root.type)
        new_root = root_change.md.signed if root_change else repo.current_metadata("root").signed
        assert isinstance(new_root, Root)
        _check_online_signers(repo, new_root)
        first = is_unpublished(repo)
        check_content(repo, req, first=first)
        new_targets = req.change(Targets.type)
        new_md = new_targets.md if new_targets else None
        bins = [] if first else hashbins.bins_to_create(repo, new_md)
        resign = [] if first else hashbins.bins_to_resign(repo, new_md)
        for change in sorted(req.changes, key=lambda c: -_ORDER.get(c.role, 2)):
            if first:  # no snapshot yet to record versions in: snapshot v1 lists targets v1
                name = metadata_filename(change.role, change.md.signed.version)
                atomic_write(repo.paths.metadata / name, change.md.to_bytes())
            else:
                repo.write(change.role, copy.deepcopy(change.md))
        hashbins.create_bins(repo, bins)
        hashbins.resign_bins(repo, resign)
        if first:
            _first_snapshot_and_timestamp(repo)
        else:
            repo.publish_snapshot_and_timestamp(force=True)
        details["request"] = req.id
        details["summary"] = req.summary
    done = repo.paths.staging / "published"
    done.mkdir(mode=0o700, exist_ok=True)
    _request_path(repo, req.id).replace(done / f"{req.id}.json")
    return req


def discard(repo: OtaRepository, req_id: str) -> None:
    """Drop a pending request (nothing published changes)."""
    path = _request_path(repo, req_id)
    if not path.exists():
        raise BadInputError(f"no pending signing request {req_id!r}")
    path.unlink()
