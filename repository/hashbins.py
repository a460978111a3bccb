"""Succinct hash-bin delegation (TAP 15) inside a publisher's role, for very large target sets.

A publisher's role (delegated by targets for paths such as `firmware/model-x/*`) may delegate
every one of its paths to 2**k bins named `<role>-bins-<hex>` with python-tuf's `SuccinctRoles`;
the bin of a path is the first k bits of its SHA-256. The bins are keyed with the publisher's own
keys and threshold, exactly as targets delegates them to the role: no online key (snapshot,
timestamp, the server's) can sign a bin, so a compromised server cannot approve firmware, and
targets' path patterns still bound what a bin can give a device (ngclient reaches a bin only
through its publisher's delegation). One publish signs the one bin a path falls in (plus
snapshot and timestamp); a device looking up one target downloads only that bin.

The bins are created with the delegation: `ota-repo delegate NAME ... --bins N` stages targets'
next version, the role's first version delegating to the bins, and every bin's empty first
version, all in one signing request (the publisher signs the role and its bins). Nothing online
renews a bin no publish touched: the publisher re-signs the role and every bin with
`ota-publish renew` (`repository.publisher.renew`) before they expire.

The former layout, targets delegating every path to bins signed by an online key, is refused:
it let whoever holds the server's keys list any firmware. A repository that has it is migrated
with `ota-repo hash-bins --off` (see `ONLINE_BINS_REFUSED`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    SuccinctRoles,
    TargetFile,
    Targets,
)

from repository.errors import BadInputError
from repository.manager import OtaRepository
from repository.signing import SigningRequest
from repository.staging import next_version, stage
from repository.targetfiles import validate_target_path, verify_published_file

logger = logging.getLogger(__name__)
BIN_PREFIX = "bins"  # the refused online-keyed layout's bins: `bins-<hex>`, delegated by targets
MAX_BINS = 2**14
ONLINE_BINS_NEW = (
    "hash bins delegated by targets would be signed by an online key and let the server approve "
    "firmware: give a publisher's role bins instead ('ota-repo delegate NAME --paths ... "
    "--key ... --bins N')"
)


def bit_length_for(bins: int) -> int:
    """Raises:
    BadInputError: `bins` is not a power of two between 2 and MAX_BINS.
    """
    if bins < 2 or bins > MAX_BINS or bins & (bins - 1):
        raise BadInputError(f"--bins takes a power of two from 2 to {MAX_BINS}, not {bins}")
    return bins.bit_length() - 1


def prefix_for(role: str) -> str:
    """The name prefix of `role`'s bins (`<role>-bins`)."""
    return f"{role}-bins"


def bin_names(role: str, bins: int) -> list[str]:
    """The names of `role`'s `bins` bins, in order.

    Raises:
        BadInputError: `bins` is not a power of two between 2 and MAX_BINS.
    """
    return list(SuccinctRoles([], 1, bit_length_for(bins), prefix_for(role)).get_roles())


def bins_of(signed: Targets) -> SuccinctRoles | None:
    """The succinct (hash-bin) delegation of a targets role, if any."""
    return signed.delegations.succinct_roles if signed.delegations is not None else None


def publisher_delegation(
    role: str, keys: Mapping[str, Key], threshold: int, bins: int
) -> Delegations:
    """`role`'s delegation of all its paths to `bins` bins keyed with `keys` and `threshold`
    (the role's own, as targets lists them)."""
    succinct = SuccinctRoles(sorted(keys), threshold, bit_length_for(bins), prefix_for(role))
    return Delegations(keys=dict(keys), succinct_roles=succinct)


def empty_bins(repo: OtaRepository, delegation: Delegations) -> dict[str, Metadata[Any]]:
    """Version 1 of every bin of `delegation`, empty and unsigned, expiring as targets roles do."""
    assert delegation.succinct_roles is not None
    result: dict[str, Metadata[Any]] = {}
    for name in delegation.succinct_roles.get_roles():
        md = next_version(repo, name)  # no published bin: version 1, fresh expiry
        assert isinstance(md.signed, Targets)
        md.signed.targets.clear()
        md.signed.delegations = None
        result[name] = md
    return result


def check_publisher_delegation(
    role: str, signed: Targets, delegated: DelegatedRole, keys: Mapping[str, Key]
) -> None:
    """A publisher's role delegates only to its own hash bins, keyed exactly as targets keys the
    role (`delegated`, with `keys` from targets' key table): nothing else may sign its firmware.

    Raises:
        BadInputError: any other delegation (named roles, other keys, a lower threshold, another
            name prefix).
    """
    d = signed.delegations
    if d is None:
        return
    bins = d.succinct_roles
    if d.roles or bins is None:
        raise BadInputError(f"{role} may not delegate further (only to its own hash bins)")
    own = {k: keys[k] for k in delegated.keyids if k in keys}
    if (
        sorted(bins.keyids) != sorted(delegated.keyids)
        or bins.threshold != delegated.threshold
        or {k: v.to_dict() for k, v in d.keys.items()} != {k: v.to_dict() for k, v in own.items()}
    ):
        raise BadInputError(
            f"{role}'s hash bins must be signed by {role}'s own keys and threshold "
            f"({delegated.threshold} of {len(delegated.keyids)}): refused"
        )
    if bins.name_prefix != prefix_for(role):
        raise BadInputError(f"{role}'s hash bins must be named {prefix_for(role)}-*")


def check_no_online_bins(signed: Targets) -> None:
    """Raises:
    BadInputError: targets delegates to hash bins (the refused online-keyed layout).
    """
    if bins_of(signed) is not None:
        raise BadInputError(ONLINE_BINS_NEW)


def enable(*_: Any, **__: Any) -> SigningRequest:
    """The former `ota-repo hash-bins N`: bins delegated by targets. Always refused.

    Raises:
        BadInputError: always (`ONLINE_BINS_NEW`).
    """
    raise BadInputError(ONLINE_BINS_NEW)


def disable(repo: OtaRepository) -> SigningRequest:
    """Stage targets' next version without its (online-keyed) hash-bin delegation: the migration
    of a repository made with the former layout. The bins' firmware is no longer trusted once it
    is published: publishers publish it again into their own roles. Caller holds the lock.

    Raises:
        BadInputError: targets does not delegate to hash bins.
    """
    md = next_version(repo, Targets.type)
    targets = md.signed
    assert isinstance(targets, Targets)
    if bins_of(targets) is None:
        raise BadInputError("targets does not delegate to hash bins: nothing to turn off")
    targets.delegations = None
    note = "targets: stop delegating to hash bins signed by an online key"
    return stage(repo, {Targets.type: md}, note=note)


def group_by_bin(repo: OtaRepository, role: str, paths: Sequence[str]) -> dict[str, list[str]]:
    """Each path under the role (or bin) `repo` lists it in, in order."""
    grouped: dict[str, list[str]] = {}
    for path in paths:
        grouped.setdefault(repo.role_for_target(role, path), []).append(path)
    return grouped


def add_stored_targets(
    repo: OtaRepository, role: str, infos: list[TargetFile], signers: list[Signer]
) -> list[str]:
    """Bulk import: list targets whose files are already in `targets/` under their
    consistent-snapshot names, each in its bin of publisher role `role`, in one publish (each
    touched bin signed once with `signers`, the publisher's keys).

    Every file is re-hashed against its TargetFile before anything is signed.

    Returns:
        The bins that were re-signed.

    Raises:
        BadInputError: `role` has no bins, a bad path or one outside the role's delegation, or
            a file missing or not matching.
        ThresholdError: `signers` do not meet the bins' threshold.
    """
    with repo.writing("add-target") as details:
        delegated = repo.targets().delegations
        roles = delegated.roles if delegated is not None else None
        if not roles or role not in roles:
            raise BadInputError(f"unknown role {role!r}: targets does not delegate to it")
        by_bin: dict[str, list[TargetFile]] = {}
        for tf in infos:
            validate_target_path(tf.path)
            if not roles[role].is_delegated_path(tf.path):
                raise BadInputError(f"{tf.path} is outside {role}'s delegation")
            name = repo.role_for_target(role, tf.path)
            if name == role:
                raise BadInputError(f"{role} does not use hash bins ('ota-repo delegate --bins')")
            verify_published_file(repo.paths.targets, tf)
            by_bin.setdefault(name, []).append(tf)
        for name in sorted(by_bin):
            repo.extra_signers[name] = list(signers)
            with repo.edit_targets(name) as targets:
                for tf in by_bin[name]:
                    targets.targets[tf.path] = tf
        repo.publish_snapshot_and_timestamp()
        details["role"] = role
        details["targets_added"] = len(infos)
    return sorted(by_bin)
