"""Signing requests: a change to an offline role, waiting for its key holders' signatures.

A request holds the new version of one or more roles (root and targets together when targets'
keys change; targets and a delegated role when a publisher's keys change), a summary in words,
and, as context for signing on a machine without the repository, the published delegator
metadata it was made against. The request file is untrusted input wherever it comes from: it is
fully validated on every load, its signatures must all come from keys the role lists and verify,
and the repository never takes the context from the file, only from what it has published.

Thresholds are python-tuf's (`get_verification_result`, `get_root_verification_result`,
`verify_delegate`); root needs both the previous root's threshold and its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Key
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import SerializationError

from repository.changes import short
from repository.errors import BadInputError, KeyError_, ThresholdError
from repository.keys import find_signer
from repository.layout import TOP_LEVEL_ROLES
from repository.rules import ROLE_NAME, check_numbers, check_role_name, check_signed

FORMAT = "secure-ota/signing-request"
FORMAT_VERSION = 2
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")
MAX_REQUEST_BYTES = 4_000_000
_ONLINE = (Snapshot.type, Timestamp.type)


@dataclass
class RoleChange:
    """The new version of one role; `base_version` is the published version it replaces."""

    role: str
    base_version: int
    md: Metadata[Any]


@dataclass
class ThresholdState:
    """One threshold a role must meet: who signed, who has not yet."""

    role: str
    label: str
    threshold: int
    signed: list[str]
    missing: list[str]
    keys: dict[str, Key] = field(repr=False, default_factory=dict)

    @property
    def met(self) -> bool:
        return len(self.signed) >= self.threshold


@dataclass
class SigningRequest:
    id: str
    created: str
    actor: str
    summary: list[str]
    changes: list[RoleChange]
    context: dict[str, Metadata[Any]]
    roots: list[Metadata[Any]] = field(default_factory=list)

    def change(self, role: str) -> RoleChange | None:
        return next((c for c in self.changes if c.role == role), None)

    @property
    def roles(self) -> list[str]:
        return [c.role for c in self.changes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "id": self.id,
            "created": self.created,
            "actor": self.actor,
            "summary": self.summary,
            "changes": [
                {"role": c.role, "base_version": c.base_version, "metadata": c.md.to_dict()}
                for c in self.changes
            ],
            "context": {role: md.to_dict() for role, md in self.context.items()},
            "roots": [md.to_dict() for md in self.roots],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "request") -> SigningRequest:
        """Parse a request file strictly.

        Raises:
            BadInputError: not a well-formed signing request.
        """
        if len(data) > MAX_REQUEST_BYTES:
            raise BadInputError(f"{source}: too large for a signing request")
        try:
            obj = json.loads(data)
            return _parse(obj)
        except BadInputError as e:
            raise BadInputError(f"{source}: {e}") from e
        except (ValueError, TypeError, KeyError, AttributeError, SerializationError) as e:
            raise BadInputError(
                f"{source}: not a valid signing request ({e or type(e).__name__})"
            ) from e


def _parse(obj: Any) -> SigningRequest:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BadInputError("not a secure-ota signing request")
    if obj.get("format_version") != FORMAT_VERSION:
        raise BadInputError(f"unsupported request format version {obj.get('format_version')!r}")
    req_id, summary = obj["id"], obj["summary"]
    if not isinstance(req_id, str) or not REQUEST_ID.fullmatch(req_id):
        raise BadInputError("bad request id")
    if not isinstance(summary, list) or not all(isinstance(s, str) for s in summary):
        raise BadInputError("bad summary")
    changes = []
    for entry in obj["changes"]:
        role, base = entry["role"], entry["base_version"]
        check_role_name(role, delegated=role not in TOP_LEVEL_ROLES)
        if type(base) is not int or base < 0:
            raise BadInputError(f"bad base version for {role}")
        changes.append(RoleChange(role, base, _metadata(entry["metadata"], role)))
    context = {}
    for role, md_dict in dict(obj["context"]).items():
        if not isinstance(role, str) or not ROLE_NAME.fullmatch(role) or role in _ONLINE:
            raise BadInputError(f"unexpected context role {role!r}")
        context[role] = _metadata(md_dict, f"context {role}")
    roots = [_metadata(md, "root chain") for md in list(obj.get("roots", []))]
    return SigningRequest(
        req_id, str(obj["created"]), str(obj["actor"]), list(summary), changes, context, roots
    )


def _metadata(md_dict: Any, where: str) -> Metadata[Any]:
    """Metadata from a request file, refusing floats before python-tuf sees them (canonical JSON
    cannot sign them, and python-tuf would take `2.0` or `true` as a threshold)."""
    check_numbers(md_dict, where)
    md = Metadata.from_dict(dict(md_dict))
    md.signed_bytes  # noqa: B018 - fails here, cleanly, for anything canonical JSON cannot hold
    return md


def content_digest(changes: list[RoleChange]) -> str:
    """SHA-256 over the signed bytes of every change: what a request id commits to."""
    h = hashlib.sha256()
    for c in changes:
        h.update(c.role.encode() + b"\0" + c.md.signed_bytes + b"\0")
    return h.hexdigest()


def _expect_type(change: RoleChange) -> None:
    kind = Root if change.role == Root.type else Targets
    if change.role in (Snapshot.type, Timestamp.type):
        raise BadInputError(f"{change.role} is an online role: it is never signed by request")
    if not isinstance(change.md.signed, kind):
        raise BadInputError(f"metadata for {change.role} is not {kind.type} metadata")
    if change.md.signed.version != change.base_version + 1:
        raise BadInputError(
            f"{change.role} v{change.md.signed.version} does not follow v{change.base_version}"
        )


def delegator_name(req: SigningRequest, role: str, context: dict[str, Metadata[Any]]) -> str:
    """The role whose keys and threshold decide `role`: root for the top-level roles, a
    publisher's role for its hash bins (as the request or the published state has it), else
    targets."""
    if role in (Targets.type, Snapshot.type, Timestamp.type):
        return Root.type
    candidates = [(c.role, c.md) for c in req.changes] + list(context.items())
    for name, md in candidates:
        if name in (Root.type, Targets.type, role) or not isinstance(md.signed, Targets):
            continue
        bins = md.signed.delegations.succinct_roles if md.signed.delegations else None
        if bins is not None and bins.is_delegated_role(role):
            return name
    return Targets.type


def _delegator(req: SigningRequest, role: str, context: dict[str, Metadata[Any]]) -> Root | Targets:
    """The metadata whose keys and threshold decide `role`'s signatures in this request."""
    parent = delegator_name(req, role, context)
    own = req.change(parent)
    md = own.md if own is not None else context.get(parent)
    if md is None:
        raise BadInputError(f"no {parent} metadata to check {role} against")
    signed = md.signed
    assert isinstance(signed, Root | Targets)
    return signed


def threshold_states(
    req: SigningRequest, context: dict[str, Metadata[Any]]
) -> list[ThresholdState]:
    """Every threshold each role in `req` must meet, checked with python-tuf.

    `context` is the published delegator metadata: the repository's own when the repository
    checks, the request's embedded copy when a key holder signs elsewhere.

    Raises:
        BadInputError: a role is not delegated, or the request is inconsistent.
    """
    states = []
    for change in req.changes:
        _expect_type(change)
        md = change.md
        try:
            if change.role == Root.type:
                assert isinstance(md.signed, Root)
                if md.signed.version == 1:  # the first root answers only to itself
                    result = md.signed.get_root_verification_result(
                        None, md.signed_bytes, md.signatures
                    )
                    pairs = [("root v1", result.second)]
                else:
                    previous = context[Root.type].signed
                    assert isinstance(previous, Root)
                    result = md.signed.get_root_verification_result(
                        previous, md.signed_bytes, md.signatures
                    )
                    pairs = [
                        (f"root v{previous.version} (previous)", result.first),
                        (f"root v{md.signed.version} (new)", result.second),
                    ]
            else:
                delegator = _delegator(req, change.role, context)
                result_one = delegator.get_verification_result(
                    change.role, md.signed_bytes, md.signatures
                )
                by = delegator_name(req, change.role, context)
                pairs = [(f"{change.role} as delegated by {by} v{delegator.version}", result_one)]
        except (ValueError, KeyError) as e:
            raise BadInputError(f"{change.role}: {e}") from e
        for label, res in pairs:
            states.append(
                ThresholdState(
                    change.role,
                    label,
                    res.threshold,
                    sorted(res.signed),
                    sorted(res.unsigned),
                    {**res.signed, **res.unsigned},
                )
            )
    return states


def authorized_keys(states: list[ThresholdState], role: str) -> dict[str, Key]:
    keys: dict[str, Key] = {}
    for s in states:
        if s.role == role:
            keys.update(s.keys)
    return keys


def validate(req: SigningRequest, context: dict[str, Metadata[Any]]) -> list[ThresholdState]:
    """Check a request completely; return its threshold states.

    Every signature must be by a key the role lists, and must verify: anything else means the
    file was tampered with or mixed up, and the whole request is refused.

    Raises:
        BadInputError: malformed, inconsistent or tampered request.
    """
    if not req.changes:
        raise BadInputError(f"request {req.id} changes nothing")
    roles = req.roles
    if len(set(roles)) != len(roles):
        raise BadInputError(f"request {req.id} lists a role twice")
    if Root.type in roles and set(roles) - {Root.type, Targets.type}:
        raise BadInputError(f"request {req.id}: root changes only travel with targets")
    for change in req.changes:
        check_signed(change.role, change.md.signed, allow_single_root_key=True)
    expected = f"-v{req.changes[0].md.signed.version}-{content_digest(req.changes)[:12]}"
    if not req.id.endswith(expected):
        raise BadInputError(f"request {req.id}: its content does not match its id (tampered?)")
    states = threshold_states(req, context)
    for change in req.changes:
        allowed = authorized_keys(states, change.role)
        for keyid, sig in change.md.signatures.items():
            key = allowed.get(keyid)
            if key is None:
                raise BadInputError(
                    f"request {req.id}: {change.role} carries a signature by {short(keyid)}, "
                    "which is not one of its keys"
                )
            try:
                key.verify_signature(sig, change.md.signed_bytes)
            except UnverifiedSignatureError as e:
                raise BadInputError(
                    f"request {req.id}: {change.role} signature by {short(keyid)} does not verify "
                    "(tampered?)"
                ) from e
    return states


def sign(req: SigningRequest, uri: str, context: dict[str, Metadata[Any]]) -> list[str]:
    """Add the signature of the key behind `uri` to every role of `req` that lists that key.

    Returns:
        The roles signed.

    Raises:
        KeyError_: the key is none of the request's keys, or cannot be loaded; nothing is signed.
        BadInputError: the request does not validate.
    """
    states = validate(req, context)
    candidates: dict[str, Key] = {}
    for change in req.changes:
        candidates.update(authorized_keys(states, change.role))
    try:
        signer = find_signer(uri, candidates)
    except KeyError_ as e:
        if "not one of" in str(e):
            raise KeyError_(
                f"the key at {uri} is not listed for {', '.join(req.roles)}: "
                "refused, nothing signed"
            ) from e
        raise
    keyid = signer.public_key.keyid
    signed = []
    for change in req.changes:
        if keyid in authorized_keys(states, change.role):
            change.md.sign(signer, append=True)
            signed.append(change.role)
    return signed


def verify_thresholds(req: SigningRequest, context: dict[str, Metadata[Any]]) -> None:
    """Refuse unless every role meets every threshold, by python-tuf's `verify_delegate`.

    Raises:
        ThresholdError: a threshold is not met (the message says who is missing).
    """
    states = validate(req, context)
    unmet = [s for s in states if not s.met]
    if unmet:
        raise ThresholdError(
            "not enough signatures: "
            + "; ".join(
                f"{s.label} has {len(s.signed)}/{s.threshold}, missing "
                f"{', '.join(short(k) for k in s.missing)}"
                for s in unmet
            )
        )
    try:
        for change in req.changes:
            if change.role == Root.type:
                if change.md.signed.version > 1:
                    context[Root.type].verify_delegate(Root.type, change.md)
                change.md.verify_delegate(Root.type, change.md)
            else:
                parent = delegator_name(req, change.role, context)
                own = req.change(parent)
                (own.md if own else context[parent]).verify_delegate(change.role, change.md)
    except UnsignedMetadataError as e:
        raise ThresholdError(f"not enough valid signatures: {e}") from e
