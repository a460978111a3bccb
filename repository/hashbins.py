"""Succinct hash-bin delegation (TAP 15) for very large target sets.

Targets delegates every path to 2**k bins named `bins-<hex>` with python-tuf's `SuccinctRoles`;
the bin of a path is the first k bits of its SHA-256. Bins are signed with an online key, so the
server adds targets without the offline targets keys: `OtaRepository.add_targets` routes each
path to its bin, edits each touched bin once, then snapshot and timestamp. A client looking up one
target downloads only that target's bin.

Turning bins on changes targets (offline): it is a signing request; when it is published, every
bin is created empty (version 1) with the online key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import (
    Delegations,
    Metadata,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
)

from repository.changes import short
from repository.errors import BadInputError, KeyError_
from repository.keys import find_signer
from repository.layout import save_config
from repository.manager import OtaRepository
from repository.signing import SigningRequest
from repository.staging import next_version, stage
from repository.targetfiles import validate_target_path, verify_published_file

logger = logging.getLogger(__name__)
BIN_PREFIX = "bins"
MAX_BINS = 2**16


def bit_length_for(bins: int) -> int:
    """Raises:
    BadInputError: `bins` is not a power of two between 2 and 65536.
    """
    if bins < 2 or bins > MAX_BINS or bins & (bins - 1):
        raise BadInputError(f"--hash-bins takes a power of two from 2 to {MAX_BINS}, not {bins}")
    return bins.bit_length() - 1


def enable(
    repo: OtaRepository, bins: int, *, key: Key | None = None, uri: str | None = None
) -> SigningRequest:
    """Stage targets' next version delegating all paths to `bins` hash bins.

    The bins' key defaults to the online snapshot key and its configured signer. Caller holds
    the writer lock.

    Raises:
        BadInputError: bad bin count, or targets already delegates.
        KeyError_: no signer URI for the bins' key on this machine.
    """
    bit_length = bit_length_for(bins)
    md = next_version(repo, Targets.type)
    targets = md.signed
    assert isinstance(targets, Targets)
    if targets.delegations is not None:
        kind = "hash bins" if targets.delegations.succinct_roles else "publishers' roles"
        raise BadInputError(f"targets delegates to {kind} already: hash bins cannot be added")
    if key is None:
        root = repo.current_metadata(Root.type).signed
        assert isinstance(root, Root)
        keyid = root.roles[Snapshot.type].keyids[0]
        key = root.keys[keyid]
        entries = [e for e in repo.config.signer_uris(Snapshot.type) if e["keyid"] == keyid]
        if not entries:
            raise KeyError_("no signer for the online snapshot key here: pass --key and --uri")
        uri = entries[0]["uri"]
    if uri is None:
        raise BadInputError("a bins key needs its signer --uri (the server signs bins)")
    find_signer(repo.resolve_uri(uri), {key.keyid: key})
    repo.config.add_signer(BIN_PREFIX, key.keyid, uri)
    save_config(repo.paths, repo.config)
    succinct = SuccinctRoles([key.keyid], 1, bit_length, BIN_PREFIX)
    targets.delegations = Delegations(keys={key.keyid: key}, succinct_roles=succinct)
    note = (
        f"targets: delegate every path to {bins} hash bins signed by online key {short(key.keyid)}"
    )
    return stage(repo, {Targets.type: md}, note=note)


def enable_now(root: Path, bins: int) -> SigningRequest:
    """Turn hash bins on in a repository whose targets keys are all on this machine (`--dev`):
    stage and publish at once. What `ota-repo init --dev --hash-bins N` calls after init.

    Raises:
        BadInputError, KeyError_: as `enable`.
        ThresholdError: targets' keys are not all here (use `ota-repo hash-bins N`).
    """
    from repository import staging

    repo = OtaRepository.load(root)
    with repo.writing("stage-request"):
        req = enable(repo, bins)
    staging.publish(OtaRepository.load(root), req.id)
    return req


def rotate_key(repo: OtaRepository, key: Key, uri: str) -> SigningRequest:
    """Stage targets' next version with `key` as the bins' only key (after a compromise, or a
    routine change). When it is published, every bin is re-signed with the new key here, so
    `uri` must open it on this machine. Caller holds the writer lock.

    Raises:
        BadInputError: targets does not use hash bins, or `key` is the bins' key already.
        KeyError_: `uri` does not hold `key`.
    """
    md = next_version(repo, Targets.type)
    targets = md.signed
    assert isinstance(targets, Targets)
    delegations = targets.delegations
    if delegations is None or delegations.succinct_roles is None:
        raise BadInputError("targets does not use hash bins")
    succinct = delegations.succinct_roles
    if succinct.keyids == [key.keyid]:
        raise BadInputError(f"key {short(key.keyid)} is the bins' key already")
    find_signer(repo.resolve_uri(uri), {key.keyid: key})
    for keyid in list(succinct.keyids):
        targets.revoke_key(keyid)
    targets.add_key(key)
    repo.config.add_signer(BIN_PREFIX, key.keyid, uri)
    save_config(repo.paths, repo.config)
    return stage(repo, {Targets.type: md})


def bins_to_resign(repo: OtaRepository, new_targets: Metadata[Any] | None) -> list[str]:
    """The published bins whose keys a newly published targets version changes."""
    if new_targets is None:
        return []
    new = new_targets.signed
    old = repo.current_metadata(Targets.type).signed
    assert isinstance(new, Targets) and isinstance(old, Targets)
    new_bins = new.delegations.succinct_roles if new.delegations else None
    old_bins = old.delegations.succinct_roles if old.delegations else None
    if new_bins is None or old_bins is None or new_bins.keyids == old_bins.keyids:
        return []
    return [b for b in new_bins.get_roles() if repo.has_role(b)]


def resign_bins(repo: OtaRepository, names: list[str]) -> None:
    """Re-sign each bin (next version, same targets) with the bins' current key.

    Caller holds the writer lock and has written the targets that names the key.
    """
    for name in names:
        with repo.edit_targets(name):
            pass  # close() bumps version and expiry and signs with the bins' key


def bins_to_create(repo: OtaRepository, new_targets: Metadata[Any] | None) -> list[str]:
    """The bins a newly published targets version delegates to that do not exist yet."""
    if new_targets is None:
        return []
    signed = new_targets.signed
    assert isinstance(signed, Targets)
    if signed.delegations is None or signed.delegations.succinct_roles is None:
        return []
    return [b for b in signed.delegations.succinct_roles.get_roles() if not repo.has_role(b)]


def create_bins(repo: OtaRepository, names: list[str]) -> None:
    """Sign and write version 1 of each bin (empty) with the online bins key.

    Caller holds the writer lock and has written the targets that delegates to them.
    """
    for name in names:
        md = Metadata(Targets())
        md.signed.version = 0
        repo.close(name, md)
    if names:
        logger.info("created %d hash bins", len(names))


def add_stored_targets(repo: OtaRepository, infos: list[TargetFile]) -> list[str]:
    """Bulk import: list targets whose files are already in `targets/` under their
    consistent-snapshot names, each in its bin, in one publish (each touched bin edited once).

    Every file is re-hashed against its TargetFile before anything is signed.

    Returns:
        The bins that were re-signed.

    Raises:
        BadInputError: bins are not enabled, a bad path, or a file missing or not matching.
    """
    with repo.writing("add-target") as details:
        by_bin: dict[str, list[TargetFile]] = {}
        for tf in infos:
            validate_target_path(tf.path)
            name = repo.role_for_target(Targets.type, tf.path)
            if name == Targets.type:
                raise BadInputError("targets does not use hash bins ('ota-repo hash-bins N')")
            verify_published_file(repo.paths.targets, tf)
            by_bin.setdefault(name, []).append(tf)
        for name in sorted(by_bin):
            with repo.edit_targets(name) as targets:
                for tf in by_bin[name]:
                    targets.targets[tf.path] = tf
        repo.publish_snapshot_and_timestamp()
        details["targets_added"] = len(infos)
    return sorted(by_bin)


def bin_for(repo: OtaRepository, path: str) -> str | None:
    """The bin that holds `path`, or None when targets does not use hash bins."""
    targets = repo.current_metadata(Targets.type).signed
    assert isinstance(targets, Targets)
    if targets.delegations is None or targets.delegations.succinct_roles is None:
        return None
    return targets.delegations.succinct_roles.get_role_for_target(path)
