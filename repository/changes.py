"""What changed between two versions of a role, in words a key holder can review before signing."""

from __future__ import annotations

from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import DelegatedRole, Root, Signed, SuccinctRoles, Targets

from repository.keyident import fingerprint
from repository.render import plain


def short(keyid: str) -> str:
    """The first 12 hex digits of a keyid: enough to tell keys apart on screen."""
    return keyid[:12]


def _key_label(keyid: str, key_dict: dict[str, Any] | None) -> str:
    if not key_dict:
        return plain(short(keyid))
    try:
        fp = " " + fingerprint(Key.from_dict(keyid, dict(key_dict)))
    except (ValueError, KeyError, TypeError):
        fp = ""
    return f"{plain(short(keyid))} ({plain(str(key_dict.get('keytype', '?')))}{fp})"


def _describe_root(old: Root, new: Root) -> list[str]:
    lines = []
    for role in new.roles:
        before = set(old.roles[role].keyids) if role in old.roles else set()
        after = set(new.roles[role].keyids)
        for keyid in sorted(after - before):
            key = new.keys[keyid].to_dict() if keyid in new.keys else None
            lines.append(f"{role} key added {_key_label(keyid, key)}")
        for keyid in sorted(before - after):
            lines.append(f"{role} key removed {short(keyid)}")
        old_t = old.roles[role].threshold if role in old.roles else None
        if old_t != new.roles[role].threshold:
            lines.append(f"{role} threshold {old_t} -> {new.roles[role].threshold}")
    if old.consistent_snapshot != new.consistent_snapshot:
        lines.append(f"consistent_snapshot {old.consistent_snapshot} -> {new.consistent_snapshot}")
    return lines


def _describe_delegated(name: str, old: DelegatedRole | None, new: DelegatedRole) -> list[str]:
    if old is None:
        return [
            f"delegation added: {plain(name)} paths {', '.join(plain(p) for p in new.paths or [])} "
            f"keys {', '.join(short(k) for k in new.keyids)} threshold {new.threshold}"
            + (" terminating" if new.terminating else "")
        ]
    lines = []
    for keyid in sorted(set(new.keyids) - set(old.keyids)):
        lines.append(f"delegation {plain(name)}: key added {short(keyid)}")
    for keyid in sorted(set(old.keyids) - set(new.keyids)):
        lines.append(f"delegation {plain(name)}: key removed {short(keyid)}")
    if old.threshold != new.threshold:
        lines.append(f"delegation {plain(name)}: threshold {old.threshold} -> {new.threshold}")
    if old.paths != new.paths:
        lines.append(
            f"delegation {plain(name)}: paths {', '.join(plain(p) for p in old.paths or [])} -> "
            f"{', '.join(plain(p) for p in new.paths or [])}"
        )
    if old.terminating != new.terminating:
        lines.append(
            f"delegation {plain(name)}: terminating {old.terminating} -> {new.terminating}"
        )
    return lines


def _describe_succinct(old: SuccinctRoles | None, new: SuccinctRoles | None) -> list[str]:
    if old == new:
        return []
    if new is None:
        return ["hash-bin delegation removed"]
    what = (
        f"{new.number_of_bins} bins '{new.name_prefix}-*' keys "
        f"{', '.join(short(k) for k in new.keyids)} threshold {new.threshold}"
    )
    return [f"hash-bin delegation {'added' if old is None else 'changed'}: {what}"]


def _describe_targets(old: Targets, new: Targets) -> list[str]:
    lines = []
    for path in sorted(set(new.targets) - set(old.targets)):
        lines.append(f"target added: {plain(path)} ({new.targets[path].length} bytes)")
    for path in sorted(set(old.targets) - set(new.targets)):
        lines.append(f"target removed: {plain(path)}")
    for path in sorted(set(old.targets) & set(new.targets)):
        if old.targets[path] != new.targets[path]:
            lines.append(f"target changed: {plain(path)}")
    old_d, new_d = old.delegations, new.delegations
    old_roles = (old_d.roles if old_d else None) or {}
    new_roles = (new_d.roles if new_d else None) or {}
    for name, role in new_roles.items():
        lines.extend(_describe_delegated(name, old_roles.get(name), role))
    for name in old_roles:
        if name not in new_roles:
            lines.append(f"delegation revoked: {plain(name)}")
    lines.extend(
        _describe_succinct(
            old_d.succinct_roles if old_d else None, new_d.succinct_roles if new_d else None
        )
    )
    return lines


def describe(role: str, old: Signed | None, new: Signed) -> list[str]:
    """Every change from `old` (None: the role is new) to `new`, one line each, role-prefixed."""
    lines: list[str] = []
    if old is None:
        lines.append("new role")
    elif isinstance(old, Root) and isinstance(new, Root):
        lines.extend(_describe_root(old, new))
    elif isinstance(old, Targets) and isinstance(new, Targets):
        lines.extend(_describe_targets(old, new))
    old_v = old.version if old is not None else 0
    lines.append(f"version {old_v} -> {new.version}")
    lines.append(f"expires {new.expires:%Y-%m-%d %H:%M}Z")
    return [f"{plain(role)}: {line}" for line in lines]


def resulting(role: str, new: Signed) -> list[str]:
    """What `role` says after the change: every key list and threshold, every delegation.

    Shown next to the diff so a holder can check keyids against the ceremony sheet even when
    they cannot see the published state the diff was computed against.
    """
    lines = []
    if isinstance(new, Root):
        for name, r in new.roles.items():
            lines.append(
                f"{name}: keys {', '.join(short(k) for k in r.keyids)} threshold {r.threshold}"
            )
    elif isinstance(new, Targets):
        lines.append(f"{len(new.targets)} target(s)")
        d = new.delegations
        for name, dr in ((d.roles if d else None) or {}).items():
            lines.append(
                f"delegates {', '.join(plain(p) for p in dr.paths or [])} to {plain(name)}: keys "
                f"{', '.join(short(k) for k in dr.keyids)} threshold {dr.threshold}"
            )
        if d is not None and d.succinct_roles is not None:
            lines.extend(_describe_succinct(None, d.succinct_roles))
    return [f"{plain(role)} v{new.version}: {line}" for line in lines]
