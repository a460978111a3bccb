"""An in-memory TUF repository that an honest publisher *or an attacker* drives from a test.

In the spirit of python-tuf's `tests/repository_simulator.py`, written for this project: it
holds every role's signed part and its signers (ed25519 keys generated per test), publishes
consistent-snapshot files into `files` (the URL paths a server serves, `metadata/N.role.json`,
`metadata/timestamp.json`, `targets/<dir>/<sha256>.<name>`), and keeps every version it ever
signed in `history` so a test can replay it. Nothing here verifies anything: the device's real
ngclient does that.

An attacker works on a `fork()`: a copy sharing the keys, where it can add firmware, sign with
only some keys (below threshold), with its own keys, with an expiry in the past, or re-point
metadata at old versions, without touching the honest repository.

Layout (the firmware contract of the device client): top-level `targets` delegates
`firmware-<hwid>` with the path pattern `firmware/<hwid>/*` to a publisher's keys; images are
`firmware/<hwid>/fw-<version>.bin` with `custom.firmware` = version, hardware ids, counter.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
DEFAULT_EXPIRY = timedelta(days=7)


def image(version: str, size: int = 8 * 1024, *, healthy: bool = True, salt: str = "") -> bytes:
    """Deterministic firmware bytes; a healthy image starts with GOOD (see the health check)."""
    head = (b"GOOD" if healthy else b"BAD!") + f" firmware {version}{salt}\n".encode()
    body = random.Random(f"{version}{salt}").randbytes(max(0, size - len(head)))
    return head + body


def _unpublished(signed: Any) -> Any:
    signed.version = 0  # the first publish makes it 1
    return signed


def delegated_name(hwid: str) -> str:
    return f"firmware-{hwid}"


def firmware_path(hwid: str, version: str) -> str:
    return f"firmware/{hwid}/fw-{version}.bin"


def firmware_custom(version: str, hwids: Iterable[str], counter: int) -> dict[str, Any]:
    return {
        "firmware": {"version": version, "hardware_ids": list(hwids), "security_counter": counter}
    }


def metadata_url_path(role: str, version: int) -> str:
    if role == "timestamp":
        return "metadata/timestamp.json"
    return f"metadata/{version}.{role}.json"


def target_url_path(target: TargetFile) -> str:
    return "targets/" + target.get_prefixed_paths()[0]


class RepositorySimulator:
    """A repository with every role's keys in memory.

    Args:
        hwids: Hardware models; each gets a delegated role `firmware-<hwid>`.
        threshold: Signature threshold of every role (keys per role: threshold + 1), so a
            test can always hold a key "below threshold".
    """

    def __init__(self, hwids: Iterable[str] = ("model-x", "model-y"), *, threshold: int = 2):
        self.threshold = threshold
        self.signers: dict[str, list[Signer]] = {}
        self.expiry: dict[str, timedelta] = {}
        self.files: dict[str, bytes] = {}
        self.history: dict[str, dict[int, bytes]] = {}
        self.images: dict[str, bytes] = {}
        self.sign_with: dict[str, list[Signer]] = {}
        self._dirty: set[str] = set()
        now = self.now()
        self.root = Root(expires=now + DEFAULT_EXPIRY, consistent_snapshot=True)
        self.root.version = 0
        for role in TOP_LEVEL:
            self.signers[role] = [CryptoSigner.generate_ed25519() for _ in range(threshold + 1)]
            self.root.roles[role].threshold = threshold
            for signer in self.signers[role]:
                self.root.add_key(signer.public_key, role)
        self.targets = _unpublished(Targets(expires=now + DEFAULT_EXPIRY))
        self.targets.delegations = Delegations(keys={}, roles={})
        self.snapshot = _unpublished(Snapshot(expires=now + DEFAULT_EXPIRY))
        self.timestamp = _unpublished(
            Timestamp(expires=now + DEFAULT_EXPIRY, snapshot_meta=MetaFile(1))
        )
        self.delegated: dict[str, Targets] = {}
        self._previous_root_signers: list[Signer] = []
        self.publish_root()
        for hwid in hwids:
            self.add_delegation(hwid)
        self.publish()

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC).replace(microsecond=0)

    # -- signing --------------------------------------------------------------------------------

    def signed_bytes(self, signed: Signed, signers: Iterable[Signer]) -> bytes:
        """`signed` wrapped in metadata with a signature from each of `signers`."""
        md = Metadata(copy.deepcopy(signed))
        for signer in signers:
            md.sign(signer, append=True)
        return md.to_bytes(JSONSerializer(compact=True))

    def _signers_for(self, role: str) -> list[Signer]:
        return self.sign_with.get(role, self.signers[role][: self.threshold])

    def _store(self, role: str, signed: Signed, signers: list[Signer]) -> bytes:
        data = self.signed_bytes(signed, signers)
        self.history.setdefault(role, {})[signed.version] = data
        self.files[metadata_url_path(role, signed.version)] = data
        return data

    def _bump(self, role: str, signed: Signed, expires: datetime | None) -> None:
        signed.version += 1
        signed.expires = expires or self.now() + self.expiry.get(role, DEFAULT_EXPIRY)
        self._store(role, signed, self._signers_for(role))

    # -- publishing -----------------------------------------------------------------------------

    def publish_root(
        self, *, signers: list[Signer] | None = None, expires: datetime | None = None
    ) -> bytes:
        """Sign and publish the next root version (old and new root keys sign it)."""
        self.root.version += 1
        self.root.expires = expires or self.now() + self.expiry.get("root", DEFAULT_EXPIRY)
        if signers is None:
            signers = list(self._signers_for("root"))
            known = {s.public_key.keyid for s in signers}
            signers += [
                s
                for s in self._previous_root_signers[: self.threshold]
                if s.public_key.keyid not in known
            ]
        self._previous_root_signers = list(self.signers["root"])
        return self._store("root", self.root, signers)

    def publish(
        self, *, expires: dict[str, datetime] | None = None, force: Iterable[str] = ()
    ) -> None:
        """Publish changed targets roles, then a new snapshot and timestamp (in that order)."""
        expires = expires or {}
        dirty = self._dirty | set(force)
        for role in sorted(dirty - {"targets", "snapshot", "timestamp"}):
            self._bump(role, self.delegated[role], expires.get(role))
            self.snapshot.meta[f"{role}.json"] = MetaFile(self.delegated[role].version)
        if "targets" in dirty or self.targets.version == 0:
            self._bump("targets", self.targets, expires.get("targets"))
            self.snapshot.meta["targets.json"] = MetaFile(self.targets.version)
        self._bump("snapshot", self.snapshot, expires.get("snapshot"))
        self.timestamp.snapshot_meta = MetaFile(self.snapshot.version)
        self._bump("timestamp", self.timestamp, expires.get("timestamp"))
        self._dirty.clear()

    def publish_timestamp(self, *, expires: datetime | None = None) -> None:
        """Only a new timestamp (what the operator's refresh timer does)."""
        self._bump("timestamp", self.timestamp, expires)

    # -- keys -----------------------------------------------------------------------------------

    def rotate_keys(self, role: str) -> list[Signer]:
        """Replace all of `role`'s keys with fresh ones and publish the new root (or targets,
        for a delegated role). Returns the retired signers (what a thief kept)."""
        old = self.signers[role]
        new = [CryptoSigner.generate_ed25519() for _ in range(self.threshold + 1)]
        self.signers[role] = new
        self.sign_with.pop(role, None)
        if role in TOP_LEVEL:
            for signer in old:
                self.root.revoke_key(signer.public_key.keyid, role)
            for signer in new:
                self.root.add_key(signer.public_key, role)
            self.publish_root()
        else:
            for signer in old:
                self.targets.revoke_key(signer.public_key.keyid, role)
            for signer in new:
                self.targets.add_key(signer.public_key, role)
            self._dirty.update({"targets", role})
        return old

    # -- content --------------------------------------------------------------------------------

    def add_delegation(self, hwid: str) -> str:
        role = delegated_name(hwid)
        self.signers[role] = [CryptoSigner.generate_ed25519() for _ in range(self.threshold + 1)]
        assert self.targets.delegations is not None and self.targets.delegations.roles is not None
        self.targets.delegations.roles[role] = DelegatedRole(
            role, [], self.threshold, True, paths=[f"firmware/{hwid}/*"]
        )
        for signer in self.signers[role]:
            self.targets.add_key(signer.public_key, role)
        self.delegated[role] = _unpublished(Targets(expires=self.now() + DEFAULT_EXPIRY))
        self._dirty.update({"targets", role})
        return role

    def add_target(
        self, role: str, path: str, data: bytes, custom: dict[str, Any] | None = None
    ) -> TargetFile:
        """List `data` at `path` in `role` (not yet published) and serve its bytes."""
        target = TargetFile.from_data(path, data, ["sha256"])
        if custom is not None:
            target.unrecognized_fields["custom"] = custom
        holder = self.targets if role == "targets" else self.delegated[role]
        holder.targets[path] = target
        self.files[target_url_path(target)] = data
        self.images[path] = data
        self._dirty.add(role)
        return target

    def add_firmware(
        self,
        hwid: str,
        version: str,
        *,
        counter: int = 0,
        size: int = 8 * 1024,
        data: bytes | None = None,
        hardware_ids: Iterable[str] | None = None,
        role: str | None = None,
        path: str | None = None,
        healthy: bool = True,
        salt: str = "",
    ) -> str:
        """Add a firmware image for `hwid` (in its delegated role unless `role` says otherwise);
        returns the target path."""
        path = path or firmware_path(hwid, version)
        data = image(version, size, healthy=healthy, salt=salt) if data is None else data
        custom = firmware_custom(version, hardware_ids or [hwid], counter)
        self.add_target(role or delegated_name(hwid), path, data, custom)
        return path

    def target(self, path: str) -> TargetFile:
        for holder in (self.targets, *self.delegated.values()):
            if path in holder.targets:
                return holder.targets[path]
        raise KeyError(path)

    def served_path(self, path: str) -> str:
        """The URL path (below the server root) the image for target `path` is served at."""
        return target_url_path(self.target(path))

    # -- attacker's helpers ---------------------------------------------------------------------

    def fork(self) -> RepositorySimulator:
        """A copy sharing the keys: the attacker's repository."""
        other = copy.copy(self)
        other.root = copy.deepcopy(self.root)
        other.targets = copy.deepcopy(self.targets)
        other.snapshot = copy.deepcopy(self.snapshot)
        other.timestamp = copy.deepcopy(self.timestamp)
        other.delegated = copy.deepcopy(self.delegated)
        other.signers = {k: list(v) for k, v in self.signers.items()}
        other.sign_with = {k: list(v) for k, v in self.sign_with.items()}
        other.expiry = dict(self.expiry)
        other.files = dict(self.files)
        other.history = {k: dict(v) for k, v in self.history.items()}
        other.images = dict(self.images)
        other._dirty = set(self._dirty)
        other._previous_root_signers = list(self._previous_root_signers)
        return other

    def metadata_files(self) -> dict[str, bytes]:
        return {k: v for k, v in self.files.items() if k.startswith("metadata/")}

    @staticmethod
    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()
