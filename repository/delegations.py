"""Delegations to publishers: add, revoke, and change a delegated role's keys.

Each is a change to targets (offline), so each becomes a signing request. A key change also
carries the delegated role's next version, signed by its new keys, so devices never see the
role signed by keys its delegation no longer lists (`clear_targets` empties it, for a compromise).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Targets

from repository import hashbins
from repository.errors import BadInputError
from repository.layout import TOP_LEVEL_ROLES
from repository.manager import ONLINE_BINS_REFUSED, OtaRepository
from repository.rotation import check_threshold, resolve_keyid
from repository.rules import check_role_name, validate_pattern
from repository.rules import overlaps as rules_overlaps
from repository.signing import SigningRequest
from repository.staging import next_version, stage
from repository.targetfiles import validate_target_path

logger = logging.getLogger(__name__)
RESERVED_PREFIX = "bins"


def overlaps(targets: Targets, name: str, paths: Sequence[str]) -> list[str]:
    """Warnings for every pattern of `name` that overlaps another delegation's pattern."""
    roles = (targets.delegations.roles if targets.delegations else None) or {}
    return [f"{o}: a device asks the role listed first" for o in rules_overlaps(roles, name, paths)]


def _editable(repo: OtaRepository) -> tuple[Metadata[Any], Targets]:
    md = next_version(repo, Targets.type)
    targets = md.signed
    assert isinstance(targets, Targets)
    if targets.delegations is not None and targets.delegations.succinct_roles is not None:
        raise BadInputError(ONLINE_BINS_REFUSED)
    return md, targets


def delegate(
    repo: OtaRepository,
    name: str,
    *,
    paths: Sequence[str],
    keys: Sequence[Key],
    threshold: int,
    terminating: bool = True,
    bins: int | None = None,
) -> tuple[SigningRequest, list[str]]:
    """Stage targets' next version delegating `paths` to `name`, with `name`'s first (empty)
    version for its own keys to sign. Caller holds the lock.

    With `bins`, `name` delegates all its paths to that many hash bins keyed with its own keys
    and threshold (`repository.hashbins`), and every bin's empty first version is staged too.

    Returns:
        The request and overlap warnings.

    Raises:
        BadInputError: bad name, pattern, keys or threshold, or the role exists.
    """
    check_role_name(name)
    if name.lower().startswith(RESERVED_PREFIX):
        raise BadInputError(f"bad role name {name}: '{RESERVED_PREFIX}' names the hash bins")
    if not paths:
        raise BadInputError("a delegation needs at least one --paths pattern")
    for p in paths:
        validate_pattern(p)
    keyids = [k.keyid for k in keys]
    if len(set(keyids)) != len(keyids):
        raise BadInputError(f"{name}: the same key is given twice")
    check_threshold(name, keyids, threshold)
    md, targets = _editable(repo)
    if targets.delegations is None:
        targets.delegations = Delegations(keys={}, roles={})
    assert targets.delegations.roles is not None
    if name in targets.delegations.roles:
        raise BadInputError(f"{name} is delegated already (change its keys with 'ota-repo rotate')")
    taken = [r for r in targets.delegations.roles if r.startswith(f"{name}-bins-")]
    taken += [r for r in targets.delegations.roles if name.startswith(f"{r}-bins-")]
    if taken:
        raise BadInputError(f"bad role name {name}: it clashes with {taken[0]}'s hash bins")
    warnings = overlaps(targets, name, paths)
    targets.delegations.roles[name] = DelegatedRole(name, [], threshold, terminating, list(paths))
    for key in keys:
        targets.add_key(key, name)
    # The role's first version (empty) travels with the delegation, signed by the publisher's
    # key: devices then find metadata for every role targets names, and the publisher proves
    # they hold the key before it is trusted.
    role_md = next_version(repo, name)
    assert isinstance(role_md.signed, Targets)
    role_md.signed.targets.clear()
    new: dict[str, Metadata[Any]] = {Targets.type: md, name: role_md}
    if bins is not None:
        role_keys = {k.keyid: k for k in keys}
        role_md.signed.delegations = hashbins.publisher_delegation(name, role_keys, threshold, bins)
        new.update(hashbins.empty_bins(repo, role_md.signed.delegations))
    return stage(repo, new), warnings


def revoke(repo: OtaRepository, name: str) -> SigningRequest:
    """Stage targets' next version without the delegation to `name` (caller holds the lock).

    Raises:
        BadInputError: `name` is not delegated.
    """
    md, targets = _editable(repo)
    roles = targets.delegations.roles if targets.delegations else None
    if not roles or name not in roles:
        raise BadInputError(f"unknown role {name!r}: targets does not delegate to it")
    for keyid in list(roles[name].keyids):
        targets.revoke_key(keyid, name)
    del roles[name]
    if not roles:
        targets.delegations = None
    return stage(repo, {Targets.type: md})


def change_keys(
    repo: OtaRepository,
    name: str,
    *,
    add: Sequence[Key] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
    clear_targets: bool = False,
) -> SigningRequest:
    """Stage a key change of delegated role `name`: targets' next version plus the role's next
    version (to be signed by the new keys). Caller holds the lock.

    Raises:
        BadInputError: unknown role, key already present or absent, bad threshold.
    """
    md, targets = _editable(repo)
    roles = targets.delegations.roles if targets.delegations else None
    if not roles or name not in roles:
        raise BadInputError(f"unknown role {name!r}: targets does not delegate to it")
    if not (add or remove or threshold is not None or clear_targets):
        raise BadInputError("nothing to change: give --add-key, --remove-key or --threshold")
    for key in add:
        if key.keyid in roles[name].keyids:
            raise BadInputError(f"key {key.keyid[:12]} is already a {name} key")
        targets.add_key(key, name)
    assert targets.delegations is not None
    for given in remove:
        keyid = resolve_keyid({k: targets.delegations.keys[k] for k in roles[name].keyids}, given)
        targets.revoke_key(keyid, name)
    if threshold is not None:
        roles[name].threshold = threshold
    check_threshold(name, roles[name].keyids, roles[name].threshold)
    new: dict[str, Metadata[Any]] = {Targets.type: md}
    role_md = next_version(repo, name)
    if clear_targets:
        assert isinstance(role_md.signed, Targets)
        role_md.signed.targets.clear()
    new[name] = role_md
    assert isinstance(role_md.signed, Targets)
    if hashbins.bins_of(role_md.signed) is not None:
        # its bins answer to the role's keys: re-keyed with it, every bin re-signed by them
        assert role_md.signed.delegations is not None and roles[name].keyids
        bins = role_md.signed.delegations.succinct_roles
        assert bins is not None
        role_keys = {k: targets.delegations.keys[k] for k in roles[name].keyids}
        count = bins.number_of_bins
        role_md.signed.delegations = hashbins.publisher_delegation(
            name, role_keys, roles[name].threshold, count
        )
        for bin_name in bins.get_roles():
            bin_md = next_version(repo, bin_name)
            if clear_targets:
                bin_md.signed.targets.clear()
            new[bin_name] = bin_md
    return stage(repo, new)


def validate_delegated_update(repo: OtaRepository, role: str, md: Metadata[Any]) -> None:
    """Check a new version of a delegated role that its publisher signed elsewhere.

    The same rules a client applies, plus the repository's own: the delegator's keys and
    threshold, exactly the next version, not expired, and every target inside the delegation's
    path patterns. The server runs it on every upload, `ota-publish` before it writes.

    Raises:
        BadInputError: wrong type, version, expiry or a target outside the delegation.
        ThresholdError: not signed by enough of the role's keys.
    """
    if role in TOP_LEVEL_ROLES:
        raise BadInputError(f"{role} is not a delegated role")
    repo.keys_for(role)  # raises for an unknown role
    if not isinstance(md.signed, Targets):
        raise BadInputError(f"metadata for {role} is not targets metadata")
    parent = repo.targets()
    if parent.delegations is None or parent.delegations.roles is None:
        raise BadInputError(ONLINE_BINS_REFUSED)  # the refused layout: bins delegated by targets
    publisher = repo.publisher_of_bin(role)  # a publisher's hash bin: its publisher's paths
    delegated = parent.delegations.roles[publisher or role]
    if publisher is not None:
        bins = hashbins.bins_of(repo.targets(publisher))
        assert bins is not None
        astray = sorted(p for p in md.signed.targets if bins.get_role_for_target(p) != role)
        if astray:
            raise BadInputError(f"{role} may not list {', '.join(astray)} (another bin's path)")
    current = repo.targets(role).version if repo.has_role(role) else 0
    if md.signed.version != current + 1:
        raise BadInputError(
            f"{role} version {md.signed.version} does not follow the published v{current}"
        )
    if md.signed.is_expired(repo.now):
        raise BadInputError(f"{role} v{md.signed.version} is already expired")
    outside = [p for p in md.signed.targets if not delegated.is_delegated_path(p)]
    if outside:
        raise BadInputError(f"{role} may not list {', '.join(sorted(outside))}")
    for path in md.signed.targets:
        validate_target_path(path)
    if md.signed.delegations is not None:
        published = repo.targets(role).delegations if repo.has_role(role) else None
        if publisher is not None or published is None or md.signed.delegations != published:
            raise BadInputError(f"{role} may not delegate further (nor change its hash bins)")
    repo.check_threshold(role, md)
