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

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from repository import audit, review
from repository.changes import describe, short
from repository.errors import BadInputError, KeyError_
from repository.fsutil import atomic_write
from repository.manager import OtaRepository, metadata_filename
from repository.rules import check_signed
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
    """The delegators a request is checked against: the published root and targets, and each
    publisher's role that delegates to hash bins."""
    if is_unpublished(repo):
        return {}
    context = {r: repo.current_metadata(r) for r in (Root.type, Targets.type)}
    d = context[Targets.type].signed.delegations
    for name in (d.roles or {}) if d is not None else {}:
        if repo.has_role(name):
            md = repo.current_metadata(name)
            inner = md.signed.delegations
            if inner is not None and inner.succinct_roles is not None:
                context[name] = md
    return context


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
    if not REQUEST_ID.fullmatch(req_id):
        raise BadInputError(f"bad request id {req_id!r}")
    return repo.paths.staging / f"{req_id}.json"


def _tombstone(repo: OtaRepository, req_id: str) -> Path:
    return repo.paths.staging / "discarded" / f"{req_id}.json"


def single_root_key_allowed(repo: OtaRepository, allow: bool = False) -> bool:
    """Whether a root threshold below 2 may be staged or published here: asked for now, consented
    to when the repository was created, or already the case (a development repository)."""
    if allow or repo.config.dev or repo.config.extra.get("allow_single_root_key") is True:
        return True
    if is_unpublished(repo):
        return False
    root = repo.current_metadata(Root.type).signed
    assert isinstance(root, Root)
    return root.roles[Root.type].threshold < 2


def check_rules(repo: OtaRepository, req: SigningRequest, *, allow_single_root_key: bool) -> None:
    """Every staging rule on every role of `req` (run again at publish, on the same bytes).

    Raises:
        BadInputError: the first rule broken.
    """
    allowed = single_root_key_allowed(repo, allow_single_root_key)
    for c in req.changes:
        check_signed(c.role, c.md.signed, allow_single_root_key=allowed)


def root_chain(repo: OtaRepository) -> list[Metadata[Any]]:
    """Every published root version, oldest first: a holder walks it from their pinned root."""
    return [repo.root_version(v) for v in repo.root_versions()]


def trusted_context(
    repo: OtaRepository, req: SigningRequest, trusted_root: Path | None = None
) -> dict[str, Metadata[Any]]:
    """The published state `req` is reviewed against, verified from `trusted_root` (the holder's
    pinned copy; by default this repository's first root) through the published root chain."""
    if is_unpublished(repo):
        return review.verified_context(req, trusted_root=None, roots=[], current={})
    pinned = (
        review.load_trusted_root(trusted_root)
        if trusted_root is not None
        else review.load_trusted_root(repo.paths.metadata / "1.root.json")
    )
    needed = {Targets.type} | {c.role for c in req.changes if c.base_version > 0}
    current = {r: repo.current_metadata(r) for r in needed - {Root.type} if repo.has_role(r)}
    return review.verified_context(
        req, trusted_root=pinned, roots=root_chain(repo), current=current
    )


def _sign_locally(repo: OtaRepository, req: SigningRequest, states: list[ThresholdState]) -> None:
    """Sign with every key this machine holds (config URIs and `extra_signers`)."""
    for change in req.changes:
        keys = {k: v for s in states if s.role == change.role for k, v in s.keys.items()}
        for signer in repo.signers_for(change.role, keys):
            if signer.public_key.keyid not in change.md.signatures:
                change.md.sign(signer, append=True)


def stage(
    repo: OtaRepository,
    new: dict[str, Metadata[Any]],
    *,
    note: str | None = None,
    allow_single_root_key: bool = False,
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
        root_chain(repo) if not is_unpublished(repo) else [],
    )
    check_rules(repo, req, allow_single_root_key=allow_single_root_key)
    states = validate(req, context)
    _sign_locally(repo, req, states)
    _tombstone(repo, req.id).unlink(missing_ok=True)  # staged again by this repository's own tools
    atomic_write(_request_path(repo, req.id), req.to_bytes(), mode=0o600)
    logger.info("staged signing request %s", req.id)
    return req


def load(repo: OtaRepository, req_id: str) -> SigningRequest:
    """Load and validate a staged request against the published state.

    Raises:
        BadInputError: unknown, malformed or tampered request.
    """
    path = _request_path(repo, req_id)
    if _tombstone(repo, req_id).exists():
        raise BadInputError(f"request {req_id} was discarded: prepare the change again")
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


def load_file(
    path: Path, trusted_root: Path | None
) -> tuple[SigningRequest, dict[str, Metadata[Any]]]:
    """Load a request file on its own (a key holder's machine).

    The file's embedded metadata is used only as candidates: the root chain is verified from
    the holder's `trusted_root`, the published targets and roles by that chain, and the request
    against those.

    Returns:
        The request and the verified published state it is reviewed and checked against.

    Raises:
        BadInputError: unreadable, malformed, tampered, or not verifiable from `trusted_root`.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read request file {path}: {e.strerror}") from e
    req = SigningRequest.from_bytes(data, source=str(path))
    pinned = review.load_trusted_root(trusted_root) if trusted_root is not None else None
    roots = [*req.roots, *([req.context[Root.type]] if Root.type in req.context else [])]
    try:
        context = review.verified_context(
            req, trusted_root=pinned, roots=roots, current=req.context
        )
        validate(req, context)
    except BadInputError as e:
        raise BadInputError(f"{path}: {e}") from e
    return req, context


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


def check_expect(req: SigningRequest, expect: str, now: datetime) -> None:
    """Refuse to sign anything but the content the holder reviewed, or an expired request.

    Raises:
        BadInputError: the content hash differs from `expect`, or a role has expired.
    """
    actual = content_digest(req.changes)
    if expect.strip().lower() != actual:
        raise BadInputError(
            f"content hash {actual} of request {req.id} does not match --expect "
            f"{expect.strip()[:64]!r}: refused, nothing signed (review it again)"
        )
    expired = [c.role for c in req.changes if c.md.signed.is_expired(now)]
    if expired:
        raise BadInputError(
            f"request {req.id} has expired ({', '.join(expired)}): refused, prepare it again"
        )


def sign_staged(
    repo: OtaRepository, req_id: str, uri: str, *, expect: str, trusted_root: Path | None = None
) -> tuple[SigningRequest, list[str]]:
    """Add one holder's signature to a staged request whose content hash is `expect`.

    Raises:
        KeyError_: the key is not listed for the request's roles (nothing is recorded).
        BadInputError: unknown, stale, expired, discarded or tampered request, or not the
            content the holder reviewed.
    """
    with repo.writing("sign-request"):
        req = load(repo, req_id)
        reason = stale_reason(repo, req)
        if reason:
            raise BadInputError(f"request {req_id} is stale: {reason}")
        check_expect(req, expect, repo.now)
        context = trusted_context(repo, req, trusted_root)
        roles = sign(req, uri, context)
        atomic_write(_request_path(repo, req.id), req.to_bytes(), mode=0o600)
    return req, roles


def sign_file(
    path: Path, uri: str, *, expect: str, trusted_root: Path | None
) -> tuple[SigningRequest, list[str], dict[str, Metadata[Any]]]:
    """Add one holder's signature to an exported request file, on any machine.

    Raises:
        KeyError_: the key is not listed for the request's roles (the file is not changed).
        BadInputError: unreadable, malformed, tampered or expired file, not verifiable from
            `trusted_root`, or not the content the holder reviewed.
    """
    req, context = load_file(path, trusted_root)
    check_expect(req, expect, datetime.now(UTC))
    roles = sign(req, uri, context)
    atomic_write(path, req.to_bytes(), mode=0o600)
    return req, roles, context


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
        try:
            check_rules(repo, incoming, allow_single_root_key=True)
        except BadInputError as e:
            raise BadInputError(f"{path}: {e}: refused, nothing imported") from e
        if not _request_path(repo, incoming.id).exists():
            _explain_unknown(repo, incoming, path)
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


def _explain_unknown(repo: OtaRepository, incoming: SigningRequest, path: Path) -> None:
    """Say why a request file matches no staged request, when a staged request changes the same
    role versions (the file's content was changed in transit).

    Raises:
        BadInputError: always, when such a staged request exists (else the caller says
            "no pending signing request").
    """
    versions = [(c.role, c.md.signed.version) for c in incoming.changes]
    for other in sorted(repo.paths.staging.glob("*.json")):
        try:
            local = SigningRequest.from_bytes(other.read_bytes(), source=other.name)
        except (BadInputError, OSError):
            continue
        if [(c.role, c.md.signed.version) for c in local.changes] == versions:
            changed = [
                line
                for c_in, c_local in zip(incoming.changes, local.changes, strict=True)
                for line in review.review_role(c_in.role, c_local.md.signed, c_in.md.signed)
            ]
            raise BadInputError(
                f"{path} holds request {incoming.id}, which is not staged here: it changes the "
                f"same versions as staged request {local.id} but its content differs "
                f"({'; '.join(changed[:3]) or 'signed bytes'}): tampered in transit? nothing "
                "imported"
            )


def _check_online_signers(repo: OtaRepository, root: Root) -> None:
    for role in (Snapshot.type, Timestamp.type):
        keys = {k: root.keys[k] for k in root.roles[role].keyids}
        if len(repo.signers_for(role, keys)) < root.roles[role].threshold:
            raise KeyError_(
                f"this machine holds no signer for the {role} key(s) "
                f"{', '.join(short(k) for k in keys)} named by the new root: add its URI first "
                "('ota-repo rotate ROLE --add-key PUB --uri URI' records one)"
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


def _bin_checks(
    repo: OtaRepository, req: SigningRequest
) -> list[tuple[Metadata[Any], str, Metadata[Any] | None]]:
    """Every hash bin of a publisher's role the request changes (the role or a bin), under the
    role's version after the request: bins signed by keys the role no longer lists stop here."""
    owners = {c.role for c in req.changes if c.role not in (Root.type, Targets.type)}
    owners |= {o for c in req.changes if (o := repo.publisher_of_bin(c.role)) is not None}
    checks: list[tuple[Metadata[Any], str, Metadata[Any] | None]] = []
    for owner in sorted(owners):
        change = req.change(owner)
        if change is None and not repo.has_role(owner):
            continue
        owner_md = change.md if change else repo.current_metadata(owner)
        d = owner_md.signed.delegations if isinstance(owner_md.signed, Targets) else None
        if d is None or d.succinct_roles is None:
            continue
        for name in d.succinct_roles.get_roles():
            bin_change = req.change(name)
            md = bin_change.md if bin_change else None
            if md is None and repo.has_role(name):
                md = repo.current_metadata(name)
            checks.append((owner_md, name, md))
    return checks


def _check_result(repo: OtaRepository, req: SigningRequest, first: bool) -> None:
    """What the repository says after `req` must verify: targets under the new root, and every
    delegated role under the new targets. A half of a multi-role request (root signatures
    replayed into a root-only request) or a delegation to a role with no metadata stops here.

    Raises:
        BadInputError: a role would be left without valid metadata; nothing is written.
    """
    root_change, targets_change = req.change(Root.type), req.change(Targets.type)
    if first:
        return
    root_md = root_change.md if root_change else repo.current_metadata(Root.type)
    targets_md = targets_change.md if targets_change else repo.current_metadata(Targets.type)
    checks: list[tuple[Metadata[Any], str, Metadata[Any] | None]] = []
    if root_change is not None:
        checks.append((root_md, Targets.type, targets_md))
    if targets_change is not None or root_change is not None:
        d = targets_md.signed.delegations
        for name in d.roles if d is not None and d.roles else {}:
            change = req.change(name)
            md = (
                change.md
                if change
                else (repo.current_metadata(name) if repo.has_role(name) else None)
            )
            checks.append((targets_md, name, md))
    checks.extend(_bin_checks(repo, req))
    for delegator, role, md in checks:
        if md is None:
            raise BadInputError(
                f"request {req.id} delegates to {role}, which has no metadata: refused"
            )
        try:
            delegator.verify_delegate(role, md)
        except UnsignedMetadataError as e:
            raise BadInputError(
                f"request {req.id} would leave {role} without valid signatures ({e}): "
                "refused, nothing published (a request publishes all its roles or none)"
            ) from e


def publish(
    repo: OtaRepository, req_id: str, *, allow_single_root_key: bool = False
) -> SigningRequest:
    """Publish a fully signed request, then snapshot and timestamp with the online keys.

    Raises:
        BadInputError: unknown, tampered, stale or expired request.
        ThresholdError: a threshold is not met; nothing is written.
        KeyError_: the online keys cannot sign here; nothing is written.
    """
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
        check_rules(repo, req, allow_single_root_key=allow_single_root_key)
        verify_thresholds(req, published_context(repo))
        root_change = req.change(Root.type)
        new_root = root_change.md.signed if root_change else repo.current_metadata("root").signed
        assert isinstance(new_root, Root)
        _check_online_signers(repo, new_root)
        first = is_unpublished(repo)
        check_content(repo, req, first=first)
        _check_result(repo, req, first)
        summary = [f"content hash {content_digest(req.changes)}"]
        for c in req.changes:
            old = repo.current_metadata(c.role).signed if c.base_version > 0 else None
            summary.extend(describe(c.role, old, c.md.signed))
        for change in sorted(req.changes, key=lambda c: -_ORDER.get(c.role, 2)):
            if first:  # no snapshot yet to record versions in: snapshot v1 lists targets v1
                name = metadata_filename(change.role, change.md.signed.version)
                atomic_write(repo.paths.metadata / name, change.md.to_bytes())
            else:
                repo.write(change.role, copy.deepcopy(change.md))
        if first:
            _first_snapshot_and_timestamp(repo)
        else:
            repo.publish_snapshot_and_timestamp(force=True)
        details["request"] = req.id
        details["summary"] = summary
    done = repo.paths.staging / "published"
    done.mkdir(mode=0o700, exist_ok=True)
    _request_path(repo, req.id).replace(done / f"{req.id}.json")
    return req


def discard(repo: OtaRepository, req_id: str) -> None:
    """Drop a pending request (nothing published changes). Its file moves to
    `staging/discarded/`, and a file of that id put back into staging is refused from then on."""
    with repo.writing("discard-request"):
        path = _request_path(repo, req_id)
        if not path.exists():
            raise BadInputError(f"no pending signing request {req_id!r}")
        tomb = _tombstone(repo, req_id)
        tomb.parent.mkdir(mode=0o700, exist_ok=True)
        path.replace(tomb)
