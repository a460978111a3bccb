"""The review a key holder reads before signing: computed on their machine, complete, safe.

The review is never carried in a request file. It is computed from the new metadata and the
current published version of each role, verified with python-tuf against a root the holder
trusts (their pinned copy, walked forward through the published root chain). It lists every
signed field that differs, one line each: a generic diff over the whole signed dictionary, so
no field (spec_version, an unknown field, a target's hashes or custom data) can change unseen,
with keys shown by the fingerprint of their material and every string escaped (`render`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Signed, Targets

from repository import render
from repository.changes import describe
from repository.errors import BadInputError
from repository.keyident import canonical_keyid, check_key, fingerprint
from repository.rules import all_overlaps
from repository.signing import SigningRequest, content_digest, delegator_name

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ABSENT = "(none)"


def _key_text(key_dict: Any) -> str:
    """A key as a holder compares it with the ceremony sheet: type, scheme, fingerprint; the
    whole dictionary too when it is not in canonical form."""
    try:
        keyid = canonical_keyid(key_dict)
        key = Key.from_dict(keyid, dict(key_dict))
    except (ValueError, TypeError, KeyError, AttributeError):
        return f"malformed key {render.value(key_dict)}"
    shown = f"{render.plain(key.keytype)}/{render.plain(key.scheme)} {fingerprint(key)}"
    try:
        check_key(keyid, key)
    except BadInputError:
        shown += f" NOT CANONICAL {render.value(key_dict)}"
    return shown


def _keyid_text(keyid: str, table: Mapping[str, Any]) -> str:
    key = table.get(keyid)
    label = render.plain(keyid[:16]) if len(keyid) <= 64 else render.text(keyid, 20)
    if key is None:
        return f"{label} (not in the key table)"
    return f"{label} {_key_text(key)}"


def _segment(key: str) -> str:
    return f".{key}" if _FIELD.fullmatch(key) else f"[{render.text(key)}]"


def _flatten(obj: Any, path: tuple[str, ...], out: dict[tuple[str, ...], str], keys: Any) -> None:
    """Every leaf of `obj` as path -> rendered value; keys and keyid lists rendered whole."""
    if path and path[-2:-1] == ("keys",) and isinstance(obj, dict):
        out[path] = _key_text(obj)
    elif isinstance(obj, dict):
        if not obj:
            out[path] = "{}"
        for k, v in obj.items():
            _flatten(v, (*path, _segment(str(k))), out, keys)
    elif (
        isinstance(obj, list) and path[-1:] == (".roles",) and all(isinstance(r, dict) for r in obj)
    ):
        # Delegated roles: by name, and their order, which decides the device's search order.
        out[(*path, " order")] = render.value([r.get("name") for r in obj])
        for i, r in enumerate(obj):
            name = r.get("name")
            seg = f"[{render.text(name)}]" if isinstance(name, str) else f"[#{i}]"
            _flatten(r, (*path, seg), out, keys)
    elif isinstance(obj, list) and path[-1:] == (".keyids",):
        table = keys.get(path[:-1], {})
        out[path] = "[" + ", ".join(_keyid_text(str(k), table) for k in obj) + "]"
    else:
        out[path] = render.value(obj)


def _key_tables(signed: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """For each path that holds a `keyids` list, the key table its keyids refer to."""
    tables: dict[tuple[str, ...], dict[str, Any]] = {}
    if signed.get("_type") == Root.type:
        for name in signed.get("roles", {}) or {}:
            tables[("root", ".roles", _segment(str(name)))] = signed.get("keys", {})
    delegations = signed.get("delegations")
    if isinstance(delegations, dict):
        for i, r in enumerate(delegations.get("roles", []) or []):
            name = r.get("name") if isinstance(r, dict) else None
            seg = f"[{render.text(name)}]" if isinstance(name, str) else f"[#{i}]"
            tables[("targets", ".delegations", ".roles", seg)] = delegations.get("keys", {})
        tables[("targets", ".delegations", ".succinct_roles")] = delegations.get("keys", {})
    return tables


def _leaves(signed: Signed | None) -> dict[tuple[str, ...], str]:
    if signed is None:
        return {}
    data = signed.to_dict()
    kind = "root" if data.get("_type") == Root.type else "targets"
    out: dict[tuple[str, ...], str] = {}
    _flatten(data, (kind,), out, _key_tables(data))
    return out


def review_role(role: str, old: Signed | None, new: Signed) -> list[str]:
    """Every signed field of `role` that differs between `old` (None: a new role) and `new`,
    one line each, then the overlaps among the new delegations."""
    before, after = _leaves(old), _leaves(new)
    lines = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path, _ABSENT), after.get(path, _ABSENT)
        if a == b:
            continue
        where = "".join(path[1:]).lstrip(".")
        lines.append(f"{render.plain(role)}: {where}: {a} -> {b}")
    if isinstance(new, Targets):
        for overlap in all_overlaps(new.delegations):
            lines.append(f"{render.plain(role)}: WARNING overlaps: {overlap}")
    return lines


def review_request(req: SigningRequest, previous: Mapping[str, Signed | None]) -> list[str]:
    """The whole review of `req` against the verified `previous` version of each role."""
    lines = [f"content hash: {content_digest(req.changes)}"]
    for change in req.changes:
        base = previous.get(change.role)
        if base is None and change.base_version > 0:
            lines.append(
                f"{render.plain(change.role)}: published v{change.base_version} does not verify "
                "under the published targets (its keys were revoked): every field is shown as new"
            )
        if base is not None and base.version != change.base_version:
            raise BadInputError(
                f"{change.role}: the request changes v{change.base_version} but the verified "
                f"published version is v{base.version}"
            )
        lines.append(
            f"{render.plain(change.role)} v{change.base_version} -> v{change.md.signed.version}"
            + (" (new role)" if base is None and change.base_version == 0 else "")
        )
        lines.extend(f"  {line}" for line in describe(change.role, base, change.md.signed))
        lines.append("  every signed field that differs:")
        lines.extend(f"    {line}" for line in review_role(change.role, base, change.md.signed))
    return lines


def _verify(delegator: Metadata[Any], role: str, md: Metadata[Any], what: str) -> None:
    try:
        delegator.verify_delegate(role, md)
    except (UnsignedMetadataError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{what} does not verify against the trusted root chain: {e}") from e


def verified_context(
    req: SigningRequest,
    *,
    trusted_root: Metadata[Root] | None,
    roots: Sequence[Metadata[Any]],
    current: Mapping[str, Metadata[Any]],
) -> dict[str, Metadata[Any]]:
    """The published delegators and previous versions `req` is checked and reviewed against,
    each verified with python-tuf: the root chain from `trusted_root` through `roots`, targets
    by that root, each changed delegated role by that targets.

    Raises:
        BadInputError: no trusted root where one is needed, or anything that does not verify.
    """
    if all(c.base_version == 0 for c in req.changes):
        return {}  # a first ceremony: nothing published to verify or compare with
    if trusted_root is None:
        raise BadInputError(
            "a request is reviewed against your own copy of the root: pass --trusted-root FILE"
        )
    trusted = trusted_root
    by_version = {md.signed.version: md for md in roots if isinstance(md.signed, Root)}
    while trusted.signed.version + 1 in by_version:
        nxt = by_version[trusted.signed.version + 1]
        _verify(trusted, Root.type, nxt, f"root v{nxt.signed.version}")
        _verify(nxt, Root.type, nxt, f"root v{nxt.signed.version}")
        trusted = nxt
    context: dict[str, Metadata[Any]] = {Root.type: trusted}
    root_change = req.change(Root.type)
    if root_change is not None and root_change.base_version != trusted.signed.version:
        raise BadInputError(
            f"the request changes root v{root_change.base_version}, but the root chain from your "
            f"trusted root reaches v{trusted.signed.version}"
        )
    needed = {Targets.type} | {c.role for c in req.changes if c.base_version > 0}
    needed.discard(Root.type)
    targets = current.get(Targets.type)
    if targets is None:
        raise BadInputError("no published targets to check the request against")
    _verify(trusted, Targets.type, targets, f"targets v{targets.signed.version}")
    context[Targets.type] = targets
    for role in sorted(needed - {Targets.type}):
        md = current.get(role)
        if md is None:
            raise BadInputError(f"no published {role} to review the change against")
        delegator = targets
        publisher = delegator_name(req, role, dict(current))
        if publisher not in (Root.type, Targets.type):  # a publisher's hash bin
            owner_md = current.get(publisher)  # the published role, verified by targets
            if owner_md is None:
                raise BadInputError(f"no published {publisher} to review {role} against")
            _verify(targets, publisher, owner_md, f"{publisher} v{owner_md.signed.version}")
            context.setdefault(publisher, owner_md)
            delegator = owner_md
        try:
            _verify(delegator, role, md, f"{role} v{md.signed.version}")
        except BadInputError:
            # Its keys were revoked since it was signed: it is no base to compare with, so
            # the review shows every field of the new version instead (nothing unseen).
            continue
        context[role] = md
    return context


def previous_versions(
    req: SigningRequest, context: Mapping[str, Metadata[Any]]
) -> dict[str, Signed | None]:
    """The verified published version each change replaces (None for a new role)."""
    return {
        c.role: context[c.role].signed if c.base_version > 0 and c.role in context else None
        for c in req.changes
    }


def load_trusted_root(path: Path) -> Metadata[Root]:
    """The holder's pinned root file.

    Raises:
        BadInputError: unreadable, or not root metadata signed by its own keys.
    """
    try:
        md = Metadata.from_bytes(Path(path).read_bytes())
    except OSError as e:
        raise BadInputError(f"cannot read trusted root {path}: {e.strerror}") from e
    except Exception as e:
        raise BadInputError(f"trusted root {path}: not TUF metadata") from e
    if not isinstance(md.signed, Root):
        raise BadInputError(f"trusted root {path}: not root metadata")
    _verify(md, Root.type, md, f"trusted root {path}")
    return md
