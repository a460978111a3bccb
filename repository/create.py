"""Creating a repository: `--dev` (every key generated here) or production (public keys only)."""

from __future__ import annotations

import logging
from pathlib import Path

from securesystemslib.signer import Key
from tuf.api.metadata import Role, Root

from repository import keys as keymod
from repository.errors import BadInputError, KeyError_
from repository.keyident import check_key_table
from repository.layout import TOP_LEVEL_ROLES, RepoConfig, RepoPaths, save_config
from repository.manager import OtaRepository

logger = logging.getLogger(__name__)


def refuse_existing(paths: RepoPaths) -> None:
    if paths.exists() or any(paths.metadata.glob("*.json")):
        raise BadInputError(f"a repository exists already at {paths.root}")


def _check_threshold(role: str, keys: list[Key], threshold: int) -> None:
    if not keys:
        raise BadInputError(f"{role} needs at least one key")
    if len({k.keyid for k in keys}) != len(keys):
        raise BadInputError(f"{role}: the same key is given twice")
    if not 1 <= threshold <= len(keys):
        raise BadInputError(
            f"{role} threshold {threshold} must be between 1 and its {len(keys)} key(s)"
        )


def build_root(role_keys: dict[str, list[Key]], thresholds: dict[str, int]) -> Root:
    root = Root(consistent_snapshot=True)
    root.version = 0  # close() makes it 1
    for role in TOP_LEVEL_ROLES:
        root.roles[role] = Role([], thresholds[role])
        for key in role_keys[role]:
            root.add_key(key, role)
    return root


def production_setup(
    root_dir: Path,
    *,
    root_keys: list[Key],
    root_threshold: int,
    targets_keys: list[Key],
    targets_threshold: int,
    online: dict[str, tuple[Key, str]],
    allow_single_root_key: bool,
    expiry_days: dict[str, int] | None,
) -> tuple[RepoPaths, Root, RepoConfig]:
    """Check a production repository's keys and build its root (version 0) and config.

    Shared by `init` (offline signatures given now) and `init-ceremony` (a signing request).

    Raises:
        BadInputError: a repository exists, bad keys or thresholds, a root threshold below 2
            without `allow_single_root_key`, or an online role without key and URI.
        KeyError_: an online URI does not hold its key (the server could not sign).
    """
    paths = RepoPaths(root_dir.resolve())
    refuse_existing(paths)
    if root_threshold < 2 and not allow_single_root_key:
        raise BadInputError(
            "root threshold below 2 lets one stolen key take over the fleet; "
            "pass --allow-single-root-key to accept that"
        )
    _check_threshold("root", root_keys, root_threshold)
    _check_threshold("targets", targets_keys, targets_threshold)
    config = RepoConfig(dev=False)
    if allow_single_root_key and root_threshold < 2:
        config.extra["allow_single_root_key"] = True
    config.expiry_days.update(expiry_days or {})
    for role in ("snapshot", "timestamp"):
        if role not in online:
            raise BadInputError(f"{role} needs an online key and its signer URI")
        key, uri = online[role]
        keymod.find_signer(uri, {key.keyid: key})
        config.add_signer(role, key.keyid, uri)
    root = build_root(
        {
            "root": root_keys,
            "targets": targets_keys,
            "snapshot": [online["snapshot"][0]],
            "timestamp": [online["timestamp"][0]],
        },
        {"root": root_threshold, "targets": targets_threshold, "snapshot": 1, "timestamp": 1},
    )
    check_key_table(root.keys, "the new root")  # one key, one vote, however each file spells it
    return paths, root, config


def init_dev(root_dir: Path, *, expiry_days: dict[str, int] | None = None) -> OtaRepository:
    """Create a repository with one freshly generated, encrypted key per top-level role.

    For demos and tests only: every private key, root's included, sits on this machine.

    Raises:
        BadInputError: a repository exists already.
        KeyError_: no passphrase to encrypt the keys with.
    """
    paths = RepoPaths(root_dir.resolve())
    refuse_existing(paths)
    passphrase = keymod.read_secret("passphrase", "the new dev keys")
    if not passphrase:
        raise KeyError_("refusing an empty passphrase: private keys are encrypted at rest")
    paths.make_dirs()
    config = RepoConfig(dev=True)
    if expiry_days:
        config.expiry_days.update(expiry_days)
    role_keys: dict[str, list[Key]] = {}
    for role in TOP_LEVEL_ROLES:
        for leftover in (paths.keys / f"{role}.key", paths.keys / f"{role}.pub"):
            leftover.unlink(missing_ok=True)  # from an init that was interrupted
        _, _, key = keymod.generate_key(paths.keys, role, passphrase=passphrase)
        role_keys[role] = [key]
        config.add_signer(role, key.keyid, f"encfile:keys/{role}.key")
    repo = OtaRepository(paths, config)
    repo.create(build_root(role_keys, dict.fromkeys(TOP_LEVEL_ROLES, 1)))
    save_config(paths, config)
    return repo


def init_production(
    root_dir: Path,
    *,
    root_keys: list[Key],
    root_threshold: int,
    targets_keys: list[Key],
    targets_threshold: int,
    online: dict[str, tuple[Key, str]],
    sign_with: list[str],
    allow_single_root_key: bool = False,
    expiry_days: dict[str, int] | None = None,
) -> OtaRepository:
    """Create a repository from public keys; offline holders sign with `sign_with` URIs.

    `online` maps snapshot and timestamp to (public key, signer URI) for the server.

    Raises:
        BadInputError: bad keys or thresholds, or a repository exists already.
        ThresholdError: the offline signatures given do not meet root's or targets' threshold.
    """
    paths, root, config = production_setup(
        root_dir,
        root_keys=root_keys,
        root_threshold=root_threshold,
        targets_keys=targets_keys,
        targets_threshold=targets_threshold,
        online=online,
        allow_single_root_key=allow_single_root_key,
        expiry_days=expiry_days,
    )
    repo = OtaRepository(paths, config)
    offline = {k.keyid: k for k in root_keys + targets_keys}
    for uri in sign_with:
        signer = keymod.find_signer(uri, offline)
        for role in ("root", "targets"):
            repo.extra_signers.setdefault(role, []).append(signer)
    paths.make_dirs()
    repo.create(root)
    save_config(paths, config)
    return repo
