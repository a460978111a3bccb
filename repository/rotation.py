"""Key changes to top-level roles and renewals, each prepared as a signing request.

Root lists every top-level role's keys, so adding or removing a key of root, targets, snapshot or
timestamp, or changing a threshold, is a new root version. When targets' keys change, the request
also carries targets' next version, to be signed by the new targets keys, so both publish
together. A new online key needs its signer URI on the server before the request can publish.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from repository.changes import short
from repository.errors import BadInputError
from repository.keyident import same_material
from repository.keys import find_signer
from repository.layout import TOP_LEVEL_ROLES, save_config
from repository.limits import Limits
from repository.manager import OtaRepository
from repository.signing import SigningRequest
from repository.staging import next_version, stage

logger = logging.getLogger(__name__)
ONLINE = (Snapshot.type, Timestamp.type)


def resolve_keyid(known: dict[str, Key], given: str) -> str:
    """A keyid from a full keyid or an unambiguous prefix of at least 8 hex digits.

    Raises:
        BadInputError: no key, or more than one, matches.
    """
    if given in known:
        return given
    matches = [k for k in known if len(given) >= 8 and k.startswith(given)]
    if len(matches) != 1:
        raise BadInputError(f"no single key {given!r} in this role")
    return matches[0]


def check_threshold(role: str, keyids: list[str], threshold: int) -> None:
    """Raises:
    BadInputError: the threshold cannot be met by the role's keys, or is below 1.
    """
    if not keyids:
        raise BadInputError(f"{role} would have no keys left")
    if not 1 <= threshold <= len(keyids):
        raise BadInputError(
            f"{role} threshold {threshold} must be between 1 and its {len(keyids)} key(s)"
        )


def change_top_level_keys(
    repo: OtaRepository,
    role: str,
    *,
    add: Sequence[Key] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
    online_uri: str | None = None,
    allow_single_root_key: bool = False,
) -> SigningRequest:
    """Stage a new root version with `role`'s keys or threshold changed.

    Caller holds the writer lock.

    Raises:
        BadInputError: unknown role, key already present or absent, bad threshold, an online
            key without its URI, or a root threshold below 2 without `allow_single_root_key`.
        KeyError_: `online_uri` does not hold the new online key.
    """
    if role not in TOP_LEVEL_ROLES:
        raise BadInputError(f"{role} is not a top-level role (delegated roles: 'ota-repo rotate')")
    if not (add or remove or threshold is not None):
        raise BadInputError("nothing to change: give --add-key, --remove-key or --threshold")
    root_md = next_version(repo, Root.type)
    root = root_md.signed
    assert isinstance(root, Root)
    old_threshold = root.roles[role].threshold
    for key in add:
        same = [k for k in root.roles[role].keyids if same_material(root.keys[k], key)]
        if key.keyid in root.roles[role].keyids or same:
            listed = same[0] if same else key.keyid
            raise BadInputError(
                f"key {short(key.keyid)} is the same key as {role} key {short(listed)}: "
                "already a key of that role"
            )
        root.add_key(key, role)
    for given in remove:
        keyid = resolve_keyid({k: root.keys[k] for k in root.roles[role].keyids}, given)
        root.revoke_key(keyid, role)
    if threshold is not None:
        root.roles[role].threshold = threshold
    check_threshold(role, root.roles[role].keyids, root.roles[role].threshold)
    if (
        role == Root.type
        and root.roles[role].threshold < 2 <= old_threshold
        and not allow_single_root_key
    ):
        raise BadInputError(
            "root threshold below 2 lets one stolen key take over the fleet; "
            "pass --allow-single-root-key to accept that"
        )
    if role in ONLINE and add:
        if online_uri is None or len(add) != 1:
            raise BadInputError(f"a new {role} key needs exactly one key and its --uri")
        signer = find_signer(repo.resolve_uri(online_uri), {add[0].keyid: add[0]})
        repo.config.add_signer(role, signer.public_key.keyid, online_uri)
        save_config(repo.paths, repo.config)
    new: dict[str, Metadata[Any]] = {Root.type: root_md}
    if role == Targets.type:
        new[Targets.type] = next_version(repo, Targets.type)
    return stage(repo, new, allow_single_root_key=allow_single_root_key)


def renew(repo: OtaRepository, role: str, *, days: int | None = None) -> SigningRequest:
    """Stage the next version of an offline role with a fresh expiry (and keep `days` as its
    expiry period from now on). Caller holds the writer lock.

    Raises:
        BadInputError: an online role (refreshed automatically), unknown role or bad days.
    """
    if role in ONLINE or role in repo.config.online_roles:
        raise BadInputError(f"{role} is online: 'ota-repo refresh' renews it")
    repo.keys_for(role)  # raises for an unknown role
    if days is not None:
        ceiling = Limits.from_config(repo.config.extra).max_expiry_days
        if not 1 <= days <= ceiling:
            raise BadInputError(
                f"--days must be from 1 to {ceiling} (limits.max_expiry_days), not {days}"
            )
        repo.config.expiry_days[role] = days
        save_config(repo.paths, repo.config)
    return stage(repo, {role: next_version(repo, role)})
