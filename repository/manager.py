"""The repository manager: TUF metadata on disk, signed and published in a safe order.

`OtaRepository` is the only user of `tuf.repository.Repository` (documented as not yet stable
API). It reads the *published* state by following timestamp -> snapshot -> role versions, so a
versioned file that a killed writer left behind, but no snapshot names, is ignored; it is never
rewritten with other bytes (a cache may hold it): the next publish takes the next free version.
Every role is signed, checked against its delegator's threshold and written
before anything that points at it: target files, delegated roles, targets, snapshot, and
`timestamp.json` last.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.repository import Repository

from repository import audit
from repository.errors import (
    BadInputError,
    CorruptRepositoryError,
    RepositoryError,
    ThresholdError,
)
from repository.fsutil import atomic_write, exclusive_lock
from repository.keys import load_signer
from repository.layout import RepoConfig, RepoPaths, load_config
from repository.targetfiles import (
    published_path,
    store_target_file,
    stored_digests,
    validate_target_path,
)

logger = logging.getLogger(__name__)

_ROOT_FILE = re.compile(r"^([1-9][0-9]*)\.root\.json\Z")
LOCK_TIMEOUT = 120.0
ONLINE_BINS_REFUSED = (
    "targets delegates to hash bins signed by an online key, which would let the server approve "
    "firmware: they are no longer signed; migrate with 'ota-repo hash-bins --off' (a targets "
    "request), then give each publisher bins: 'ota-repo delegate NAME ... --bins N'"
)


class VersionFileTaken(RepositoryError):
    """A versioned metadata file exists already with other bytes."""


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def metadata_filename(role: str, version: int) -> str:
    """The consistent-snapshot file name a client asks for."""
    if role == Timestamp.type:
        return "timestamp.json"
    return f"{version}.{quote(role, '')}.json"


class OtaRepository(Repository):
    """A repository on the local file system.

    Not thread-safe; writers in different processes are serialised by `writing()`.
    """

    def __init__(self, paths: RepoPaths, config: RepoConfig, *, now: datetime | None = None):
        self.paths = paths
        self.config = config
        self.now = now or datetime.now(UTC)
        self._current: dict[str, Metadata[Any]] = {}
        self._targets_infos: dict[str, MetaFile] | None = None
        self._snapshot_info: MetaFile | None = None
        self._signers: dict[str, Signer] = {}
        self._closed: dict[str, Metadata[Any]] = {}
        self.extra_signers: dict[str, list[Signer]] = {}
        self.lock_timeout = LOCK_TIMEOUT

    @classmethod
    def load(cls, root: Path) -> OtaRepository:
        paths = RepoPaths(root.resolve())
        return cls(paths, load_config(paths))

    # -- reading the published state ---------------------------------------------------------

    def _read(self, filename: str) -> Metadata[Any]:
        path = self.paths.metadata / filename
        try:
            return Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError as e:
            raise CorruptRepositoryError(f"published metadata missing: metadata/{filename}") from e
        except (OSError, DeserializationError) as e:
            raise CorruptRepositoryError(
                f"published metadata unreadable: metadata/{filename}"
            ) from e

    def root_versions(self) -> list[int]:
        found = sorted(
            int(m.group(1))
            for p in self.paths.metadata.glob("*.root.json")
            if (m := _ROOT_FILE.match(p.name))
        )
        # Only an unbroken chain 1..N counts: a client walks it one version at a time.
        chain = []
        for expected, v in enumerate(found, 1):
            if v != expected:
                break
            chain.append(v)
        return chain

    def root_version(self, version: int) -> Metadata[Any]:
        """Published root `version` (every one is kept: clients walk the chain)."""
        return self._read(metadata_filename(Root.type, version))

    def _load_current(self, role: str) -> Metadata[Any]:
        if role == Root.type:
            versions = self.root_versions()
            if not versions:
                raise CorruptRepositoryError("no root metadata published (metadata/1.root.json)")
            return self._read(metadata_filename(role, versions[-1]))
        if role == Timestamp.type:
            return self._read("timestamp.json")
        if role == Snapshot.type:
            version = self._current_signed(Timestamp.type, Timestamp).snapshot_meta.version
            return self._read(metadata_filename(role, version))
        meta = self._current_signed(Snapshot.type, Snapshot).meta.get(f"{role}.json")
        if meta is None:
            md = Metadata(Targets(expires=self.now))
            md.signed.version = 0  # close() bumps it to 1
            return md
        return self._read(metadata_filename(role, meta.version))

    def _current_md(self, role: str) -> Metadata[Any]:
        if role not in self._current:
            md = self._load_current(role)
            expected = Targets if role not in (Root.type, Snapshot.type, Timestamp.type) else None
            if expected is not None and not isinstance(md.signed, expected):
                raise CorruptRepositoryError(f"metadata for {role} is not targets metadata")
            self._current[role] = md
        return self._current[role]

    def _current_signed(self, role: str, kind: type[Any]) -> Any:
        signed = self._current_md(role).signed
        if not isinstance(signed, kind):
            raise CorruptRepositoryError(f"published {role} metadata has the wrong type")
        return signed

    def has_role(self, role: str) -> bool:
        if role in (Root.type, Snapshot.type, Timestamp.type, Targets.type):
            return True
        return f"{role}.json" in self._current_signed(Snapshot.type, Snapshot).meta

    def current_metadata(self, role: str) -> Metadata[Any]:
        """A copy of the published metadata of `role`."""
        return copy.deepcopy(self._current_md(role))

    # -- tuf.repository.Repository -------------------------------------------------------------

    def open(self, role: str) -> Metadata[Any]:
        return copy.deepcopy(self._current_md(role))

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        if self._targets_infos is None:
            snapshot = self._current_signed(Snapshot.type, Snapshot)
            self._targets_infos = copy.deepcopy(snapshot.meta)
        return self._targets_infos

    @property
    def snapshot_info(self) -> MetaFile:
        if self._snapshot_info is None:
            ts = self._current_signed(Timestamp.type, Timestamp)
            self._snapshot_info = copy.deepcopy(ts.snapshot_meta)
        return self._snapshot_info

    def close(self, role: str, md: Metadata[Any]) -> None:
        self.finalize(role, md)
        self.write(role, md)

    def finalize(self, role: str, md: Metadata[Any]) -> None:
        """Bump version, set expiry, sign and check the threshold; nothing is written."""
        md.signed.version += 1
        if role not in (Root.type, Timestamp.type):  # skip versions a failed publish left
            while (self.paths.metadata / metadata_filename(role, md.signed.version)).exists():
                md.signed.version += 1
        md.signed.expires = (self.now + timedelta(days=self.config.expiry_for(role))).replace(
            microsecond=0
        )
        md.signatures.clear()
        self.sign(role, md)
        self.check_threshold(role, md)

    def create(self, root: Root) -> None:
        """Publish version 1 of every top-level role, with `root` (version 0) as the root.

        All four are signed and checked before the first file is written.
        """
        self.paths.make_dirs()
        with exclusive_lock(self.paths.lock, timeout=LOCK_TIMEOUT):
            fresh: dict[str, Metadata[Any]] = {
                Root.type: Metadata(root),
                Targets.type: Metadata(Targets()),
                Snapshot.type: Metadata(Snapshot()),
                Timestamp.type: Metadata(Timestamp()),
            }
            for md in fresh.values():
                md.signed.version = 0
            self._current = copy.deepcopy(fresh)
            for role, md in fresh.items():
                self.finalize(role, md)
            for role, md in fresh.items():
                self.write(role, md)
            self._audit("init", {})

    # -- signing ---------------------------------------------------------------------------------

    def keys_for(self, role: str) -> dict[str, Key]:
        """The keys the delegator of `role` lists for it, by keyid.

        Raises:
            BadInputError: `role` is not delegated.
        """
        if role in (Root.type, Targets.type, Snapshot.type, Timestamp.type):
            root = self._current_signed(Root.type, Root)
            return {k: root.keys[k] for k in root.roles[role].keyids}
        parent = self._current_signed(self.delegator_of(role), Targets)
        delegations = parent.delegations
        succinct = delegations.succinct_roles if delegations is not None else None
        if delegations is not None and succinct is not None and succinct.is_delegated_role(role):
            return {k: delegations.keys[k] for k in succinct.keyids}  # a hash bin
        if delegations is None or delegations.roles is None or role not in delegations.roles:
            raise BadInputError(f"unknown role {role!r}: targets does not delegate to it")
        return {k: delegations.keys[k] for k in delegations.roles[role].keyids}

    def bin_prefix(self, role: str) -> str | None:
        """The succinct name prefix if `role` is one of targets' hash bins, else None."""
        if role in (Root.type, Targets.type, Snapshot.type, Timestamp.type):
            return None
        delegations = self._current_signed(Targets.type, Targets).delegations
        succinct = delegations.succinct_roles if delegations is not None else None
        if succinct is not None and succinct.is_delegated_role(role):
            return str(succinct.name_prefix)
        return None

    def publisher_of_bin(self, role: str) -> str | None:
        """The publisher's role that delegates `role` as one of its hash bins, else None.

        A bin is named `<publisher>-bins-<hex>` and delegated succinctly by that publisher's
        published role (keyed with the publisher's own keys, never an online one).
        """
        if role in (Root.type, Targets.type, Snapshot.type, Timestamp.type):
            return None
        delegations = self._current_signed(Targets.type, Targets).delegations
        for name in (delegations.roles or {}) if delegations is not None else {}:
            if not role.startswith(f"{name}-bins-") or not self.has_role(name):
                continue
            inner = self._current_signed(name, Targets).delegations
            bins = inner.succinct_roles if inner is not None else None
            if bins is not None and bins.is_delegated_role(role):
                return str(name)
        return None

    def delegator_of(self, role: str) -> str:
        """The role whose metadata lists the keys of `role` (not root's top-level roles)."""
        return self.publisher_of_bin(role) or Targets.type

    def role_for_target(self, role: str, path: str) -> str:
        """Where `path` is listed when added to `role`: its hash bin if `role` delegates to bins
        (a publisher's role, or a legacy targets with bins)."""
        if role in (Root.type, Snapshot.type, Timestamp.type) or not self.has_role(role):
            return role
        delegations = self._current_signed(role, Targets).delegations
        if delegations is not None and delegations.succinct_roles is not None:
            return str(delegations.succinct_roles.get_role_for_target(path))
        return role

    def signers_for(self, role: str, keys: dict[str, Key] | None = None) -> list[Signer]:
        """Signers this machine holds for `role`: configured URIs plus any given at run time."""
        if self.bin_prefix(role) is not None:
            raise BadInputError(ONLINE_BINS_REFUSED)
        keys = self.keys_for(role) if keys is None else keys
        result = [s for s in self.extra_signers.get(role, []) if s.public_key.keyid in keys]
        # all bins share one configured signer: the legacy bins' or their publisher's
        config_role = self.bin_prefix(role) or self.publisher_of_bin(role) or role
        for entry in self.config.signer_uris(config_role):
            keyid, uri = entry["keyid"], self.resolve_uri(entry["uri"])
            if keyid not in keys:
                continue  # a key rotated out of the role; its URI is kept only for history
            if uri not in self._signers:
                self._signers[uri] = load_signer(uri, keys[keyid])
            result.append(self._signers[uri])
        return result

    def resolve_uri(self, uri: str) -> str:
        """`encfile:` paths in the config are relative to the private folder."""
        scheme, _, rest = uri.partition(":")
        if scheme == "encfile" and not rest.startswith("/"):
            return f"encfile:{self.paths.private / rest}"
        return uri

    def sign(self, role: str, md: Metadata[Any]) -> None:
        """Add every signature this machine can make for `role` (a new root: old and new keys)."""
        keys = self.keys_for(role)
        if isinstance(md.signed, Root):
            keys.update({k: md.signed.keys[k] for k in md.signed.roles[Root.type].keyids})
        for signer in self.signers_for(role, keys):
            if signer.public_key.keyid not in md.signatures:
                md.sign(signer, append=True)

    def check_threshold(self, role: str, md: Metadata[Any]) -> None:
        """Refuse to publish `md` unless its delegator(s) would accept it.

        Raises:
            ThresholdError: too few valid signatures.
        """
        try:
            if role == Root.type:
                if md.signed.version > 1:
                    self._current_md(Root.type).verify_delegate(Root.type, md)
                md.verify_delegate(Root.type, md)
            elif role in (Targets.type, Snapshot.type, Timestamp.type):
                self._current_md(Root.type).verify_delegate(role, md)
            else:
                self._current_md(self.delegator_of(role)).verify_delegate(role, md)
        except UnsignedMetadataError as e:
            raise ThresholdError(
                f"{role} v{md.signed.version} is not signed by enough keys: {e}"
            ) from e

    # -- writing ----------------------------------------------------------------------------------

    def write(self, role: str, md: Metadata[Any], *, data: bytes | None = None) -> None:
        """Write `md` (or its exact signed bytes `data`) as its consistent-snapshot file.

        Raises:
            VersionFileTaken: the versioned file exists with other bytes (left by an
                interrupted publish, maybe fetched and cached already): it is never rewritten.
        """
        filename = metadata_filename(role, md.signed.version)
        data = md.to_bytes() if data is None else data
        path = self.paths.metadata / filename
        if role == Timestamp.type or _read_if_exists(path) != data:
            if role != Timestamp.type and path.exists():
                raise VersionFileTaken(
                    f"metadata/{filename} exists with other bytes and is never rewritten"
                )
            atomic_write(path, data)
        self._current[role] = copy.deepcopy(md)
        self._closed[role] = md
        if role == Snapshot.type:
            self._snapshot_info = MetaFile(md.signed.version)
        elif role not in (Root.type, Timestamp.type):
            self.targets_infos[f"{role}.json"] = MetaFile(md.signed.version)
        logger.debug("wrote metadata/%s", filename)

    @contextmanager
    def writing(self, action: str) -> Iterator[dict[str, Any]]:
        """Hold the writer lock for one operation and audit what it published.

        Yields a dict the operation fills with details for the audit line.
        """
        with exclusive_lock(self.paths.lock, timeout=self.lock_timeout):
            # Another writer may have published while this process waited: re-read.
            self._current.clear()
            self._targets_infos = None
            self._snapshot_info = None
            self._closed.clear()
            self._record_unaudited_publish()
            details: dict[str, Any] = {}
            yield details
            if self._closed:
                self._audit(action, details)

    def _audit(self, action: str, details: dict[str, Any]) -> None:
        versions = {role: md.signed.version for role, md in self._closed.items()}
        signed_by = {role: sorted(md.signatures) for role, md in self._closed.items()}
        audit.append(
            self.paths.audit,
            {
                "actor": audit.actor(),
                "action": action,
                "versions": versions,
                "keyids": signed_by,
                **details,
            },
        )
        self._closed.clear()

    def _record_unaudited_publish(self) -> None:
        if not (self.paths.metadata / "timestamp.json").exists():
            return
        published = self.timestamp().version
        if published > audit.last_timestamp_version(self.paths.audit):
            audit.append(
                self.paths.audit,
                {
                    "actor": audit.actor(),
                    "action": "recovered",
                    "note": "a publish completed without its audit record (interrupted writer)",
                    "versions": {"timestamp": published},
                },
            )

    def publish_snapshot_and_timestamp(self, *, force: bool = False) -> None:
        self.do_snapshot(force=force)
        self.do_timestamp(force=force)

    # -- operations ------------------------------------------------------------------------------

    def add_targets(
        self, files: Iterable[tuple[Path, str, dict[str, Any] | None]], *, role: str = Targets.type
    ) -> list[TargetFile]:
        """Publish firmware files in one new version of `role` (and snapshot, timestamp).

        Raises:
            BadInputError: a path or file is bad; nothing is published.
            ThresholdError, KeyError_: the role cannot be signed here; nothing is published.
        """
        files = list(files)
        for _, path, _ in files:
            validate_target_path(path)
        with self.writing("add-target") as details:
            if not self.has_role(role):
                raise BadInputError(f"unknown role {role!r}")
            where = {p: self.role_for_target(role, p) for _, p, _ in files}
            for listed_by in set(where.values()):
                self.signers_for(listed_by)  # fail on keys before copying any bytes
            self._refuse_listed(where)
            earlier = {p: stored_digests(self.paths.targets, p) for p in where}
            added = [store_target_file(self.paths.targets, src, p, c) for src, p, c in files]
            self._refuse_changed_bytes(added, earlier)
            by_role: dict[str, list[TargetFile]] = {}
            for tf in added:
                by_role.setdefault(where[tf.path], []).append(tf)
            for listed_by in sorted(by_role):  # one new version per touched role (or bin)
                with self.edit_targets(listed_by) as targets:
                    for tf in by_role[listed_by]:
                        targets.targets[tf.path] = tf
            self.publish_snapshot_and_timestamp()
            details["role"] = role
            details["targets_added"] = [tf.path for tf in added]
        return added

    def _refuse_listed(self, where: dict[str, str]) -> None:
        """A listed target is immutable: devices may hold its bytes under that name."""
        for path, listed_by in where.items():
            listed = self._current_signed(listed_by, Targets).targets.get(path)
            if listed is not None:
                raise BadInputError(
                    f"{path} is published already: publish a new version under a new path"
                )

    def _refuse_changed_bytes(self, added: list[TargetFile], earlier: dict[str, set[str]]) -> None:
        """A path removed earlier may come back only with the bytes it had.

        Raises:
            BadInputError: other bytes were published under this path; the copies just stored
                are removed again, nothing is published.
        """
        changed = [
            tf for tf in added if earlier[tf.path] and tf.hashes["sha256"] not in earlier[tf.path]
        ]
        if not changed:
            return
        for tf in added:
            if tf.hashes["sha256"] not in earlier[tf.path]:
                published_path(self.paths.targets, tf).unlink(missing_ok=True)
        raise BadInputError(
            f"{changed[0].path} was published before with other bytes: "
            "publish a new version under a new path"
        )

    def remove_targets(self, target_paths: Iterable[str], *, role: str = Targets.type) -> None:
        """Raises:
        BadInputError: a path is not a target of `role`; nothing is published.
        """
        target_paths = list(target_paths)
        with self.writing("remove-target") as details:
            if not self.has_role(role):
                raise BadInputError(f"unknown role {role!r}")
            where = {p: self.role_for_target(role, p) for p in target_paths}
            missing = [
                p for p in target_paths if p not in self._current_signed(where[p], Targets).targets
            ]
            if missing:
                raise BadInputError(f"not a target of {role}: {', '.join(missing)}")
            for listed_by in sorted(set(where.values())):
                with self.edit_targets(listed_by) as targets:
                    for p in target_paths:
                        if where[p] == listed_by:
                            del targets.targets[p]
            self.publish_snapshot_and_timestamp()
            details["role"] = role
            details["targets_removed"] = target_paths

    def refresh(self, *, margin_fraction: float = 0.5) -> list[str]:
        """Re-sign snapshot and timestamp when less than `margin_fraction` of their validity is
        left. Idempotent: does nothing while all are fresh. Hash bins are never signed here:
        their publishers sign them (targets' online-keyed bins are refused, see
        `ONLINE_BINS_REFUSED`).

        Returns:
            The roles that were re-signed.
        """
        done: list[str] = []
        with self.writing("refresh"):

            def due(role: str) -> bool:
                left: timedelta = self._current_md(role).signed.expires - self.now
                return left < timedelta(days=self.config.expiry_for(role)) * margin_fraction

            if due(Snapshot.type):
                self.do_snapshot(force=True)
                done.append(Snapshot.type)
            if done or due(Timestamp.type):
                self.do_timestamp(force=True)
                done.append(Timestamp.type)
        return done
