"""The one place the client talks to python-tuf's ngclient.

`TufClient` wraps `tuf.ngclient.Updater`: it refreshes metadata from the provisioned root,
answers verified target lookups, lists the firmware published for a hardware model (a hint,
read from the metadata files ngclient cached after verifying them), and streams target bytes.
Every signature, threshold, version, expiry and length check on metadata is python-tuf's; only
public APIs are used. On top of them, each root ngclient verified on the way from the provisioned
root and each targets role whose delegations a lookup follows must count every key as one vote
(`client.keyident`), or the lookup is refused before any firmware is picked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, Snapshot, SuccinctRoles, TargetFile, Targets
from tuf.api.serialization import DeserializationError
from tuf.ngclient import Updater, UpdaterConfig

from client.errors import MetadataError, NetworkError, StorageError, TargetNotFoundError
from client.fetcher import DeviceFetcher
from client.keyident import check_delegations, check_root
from client.storage import fsync_dir

logger = logging.getLogger(__name__)

# A name no publisher uses: looking it up makes ngclient load (and verify) every delegated role
# on the way to firmware/<hwid>/, which the listing then reads from ngclient's cache.
LISTING_PROBE = ".ota-listing-probe"
# The most the provisioned trusted root may be: ngclient's own limit for a root file.
MAX_ROOT_BYTES = UpdaterConfig().root_max_length


def wrap_tuf_error(e: Exception, doing: str) -> Exception:
    """Translate a python-tuf or OS error into the client's own, once."""
    if isinstance(e, exceptions.DownloadError):
        return NetworkError(f"{doing}: {e}")
    if isinstance(e, exceptions.RepositoryError):
        return MetadataError(f"{doing}: {type(e).__name__}: {e}")
    if isinstance(e, OSError):
        return StorageError(f"{doing}: {e.strerror or e}")
    return MetadataError(f"{doing}: {e}")


class TufClient:
    """Verified metadata and targets for one repository.

    Args:
        metadata_dir: ngclient's cache (inside the private data directory).
        metadata_url: Base URL of the metadata.
        targets_url: Base URL of the targets.
        fetcher: Network access.
        bootstrap: The provisioned trusted root's bytes. None trusts the cached root.json
            (only for the conformance adapter, whose `init` copied the trusted root there).

    Raises:
        MetadataError: the trusted root does not load.
        StorageError: the metadata directory cannot be written.
    """

    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        targets_url: str | None,
        fetcher: DeviceFetcher,
        *,
        bootstrap: bytes | None,
        config: UpdaterConfig | None = None,
    ):
        self.metadata_dir = metadata_dir
        self.targets_url = (
            targets_url if not targets_url or targets_url.endswith("/") else (targets_url + "/")
        )
        self.fetcher = fetcher
        self._refreshed = False
        try:
            self._updater = Updater(
                str(metadata_dir),
                metadata_url,
                None,
                self.targets_url,
                fetcher,
                config,
                bootstrap=bootstrap,
            )
        except (OSError, exceptions.RepositoryError, DeserializationError, ValueError) as e:
            raise wrap_tuf_error(e, "cannot load the trusted root") from e
        # The root ngclient starts from (it linked root.json to it): the root chain checked
        # after each refresh begins here.
        self._anchor = self._cached_root().version
        self._snapshot: Snapshot | None = None  # the verified one, once refreshed
        self._delegators: dict[str, Targets] = {}  # roles whose delegations were checked

    @property
    def max_delegations(self) -> int:
        return self._updater.config.max_delegations

    def refresh(self) -> None:
        """Refresh top-level metadata (client workflow 5.3 to 5.6), once per instance.

        Raises:
            NetworkError: the repository could not be reached.
            MetadataError: python-tuf refused the metadata.
            StorageError: the cache cannot be written.
        """
        if self._refreshed:
            return
        try:
            self._updater.refresh()
        except (OSError, exceptions.RepositoryError, exceptions.DownloadError) as e:
            raise wrap_tuf_error(e, "metadata refresh failed") from e
        self._check_root_chain()
        self._refreshed = True

    def _check_root_chain(self) -> None:
        """Key identity on each root ngclient verified from the anchor up: the whole key table
        of the root now trusted, the root role's keys of each root before it (they verified
        the next one). ngclient re-verifies cached roots each session, so a refused root stays
        refused until the security team signs a newer one.

        Raises:
            MetadataError: a root lists one key twice or a key under another keyid.
        """
        final = self._cached_root()
        for version in range(self._anchor, final.version):
            path = self.metadata_dir / "root_history" / f"{version}.root.json"
            check_root(self._read_root(path), final=False)
        check_root(final, final=True)

    def _cached_root(self) -> Root:
        return self._read_root(self.metadata_dir / "root.json")

    @staticmethod
    def _read_root(path: Path) -> Root:
        try:
            md = Metadata[Root].from_bytes(path.read_bytes())
        except (OSError, DeserializationError) as e:
            raise MetadataError(f"no verified root at {path.name} in the metadata cache") from e
        if not isinstance(md.signed, Root):
            raise MetadataError(f"cached {path.name} is not root metadata")
        return md.signed

    def find_target(self, path: str) -> TargetFile | None:
        """The verified `TargetFile` for `path` (loading delegated roles as needed), or None.

        Raises:
            NetworkError, MetadataError, StorageError: as for `refresh`.
        """
        self.refresh()
        try:
            target = self._updater.get_targetinfo(path)
        except (OSError, exceptions.RepositoryError, exceptions.DownloadError) as e:
            raise wrap_tuf_error(e, f"looking up {path} failed") from e
        self._check_delegators(path)
        return target

    def _check_delegators(self, path: str) -> None:
        """Key identity on the delegations of each targets role ngclient's lookup of `path`
        followed: the same preorder walk (`Updater._preorder_depth_first_walk` in python-tuf),
        over the roles it just verified and cached.

        Raises:
            MetadataError: a followed role's delegations list one key twice or a key under
                another keyid, or a role the lookup verified is not in the cache.
        """
        to_visit = [Targets.type]
        visited: set[str] = set()
        while to_visit and len(visited) <= self.max_delegations:
            role = to_visit.pop()
            if role in visited:
                continue
            checked = role in self._delegators
            targets = self._delegators[role] if checked else self._verified_targets(role)
            if path in targets.targets:
                return
            visited.add(role)
            if targets.delegations is None:
                continue
            children = []
            for child, terminating in targets.delegations.get_roles_for_target(path):
                children.append(child)
                if terminating:
                    to_visit = []
                    break
            if children and not checked:
                check_delegations(role, targets)
                self._delegators[role] = targets  # checked; a session never reloads a role
            to_visit.extend(reversed(children))

    def _verified_targets(self, role: str) -> Targets:
        """`role` as ngclient cached it in this session, at the version the snapshot names.

        Raises:
            MetadataError: it is not in the cache at that version.
        """
        if self._snapshot is None:
            self._snapshot = self._cached_snapshot()
        meta = self._snapshot.meta.get(f"{role}.json")
        md = self._cached(role)
        if md is None or meta is None or md.signed.version != meta.version:
            raise MetadataError(f"verified {role[:64]!a} is not in the metadata cache")
        return md.signed

    def persist(self) -> None:
        """Make the metadata ngclient cached durable (it renames without fsync). The cached
        versions are the client's rollback protection, so a power cut must not lose them.

        Raises:
            StorageError: the cache cannot be synced.
        """
        try:
            for path in [
                *self.metadata_dir.glob("*.json"),
                *self.metadata_dir.glob("root_history/*.json"),
            ]:
                if path.is_symlink():
                    continue
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for folder in (self.metadata_dir, self.metadata_dir / "root_history"):
                if folder.is_dir():
                    fsync_dir(folder)
        except OSError as e:
            raise StorageError(f"cannot sync the metadata cache: {e.strerror or e}") from e

    def get_target(self, path: str) -> TargetFile:
        """Like `find_target`, but a missing target is an error.

        Raises:
            TargetNotFoundError: no role the client trusts lists `path`.
        """
        target = self.find_target(path)
        if target is None:
            raise TargetNotFoundError(f"{path} is not a target in the verified metadata")
        return target

    # -- listing (a hint: every candidate is looked up again with get_target) -----------------

    def _cached(self, role: str) -> Metadata[Targets] | None:
        """A role's metadata as ngclient cached it after verifying it in this session."""
        path = self.metadata_dir / f"{quote(role, '')}.json"
        try:
            md = Metadata[Targets].from_bytes(path.read_bytes())
        except (OSError, DeserializationError):
            return None
        if not isinstance(md.signed, Targets):
            return None
        return md

    def _cached_snapshot(self) -> Snapshot:
        try:
            md = Metadata[Snapshot].from_bytes((self.metadata_dir / "snapshot.json").read_bytes())
        except (OSError, DeserializationError) as e:
            raise MetadataError("no verified snapshot in the metadata cache") from e
        if not isinstance(md.signed, Snapshot):
            raise MetadataError("cached snapshot.json is not snapshot metadata")
        return md.signed

    def list_under(self, prefix: str) -> list[TargetFile]:
        """Targets whose path starts with `prefix` (which ends with "/"), first role wins.

        Walks the delegation graph the way ngclient's lookup for `prefix` + a probe name does,
        reading each visited role from ngclient's cache only if its version is the one the
        verified snapshot names. Hash bins (succinct delegations) are all visited, since a
        path's bin depends on its hash.

        Raises:
            NetworkError, MetadataError, StorageError: as for `refresh`.
        """
        probe = prefix + LISTING_PROBE
        if self.find_target(probe) is not None:
            raise MetadataError(f"a target is published at the reserved path {probe}")
        snapshot = self._cached_snapshot()
        found: dict[str, TargetFile] = {}
        to_visit = [Targets.type]
        visited: set[str] = set()
        while to_visit and len(visited) <= self.max_delegations:
            role = to_visit.pop()
            if role in visited:
                continue
            visited.add(role)
            meta = snapshot.meta.get(f"{role}.json")
            md = self._cached(role)
            if md is None or meta is None or md.signed.version != meta.version:
                logger.debug("role %s not in the verified cache: not listed", role)
                continue
            for path, target in md.signed.targets.items():
                if path.startswith(prefix):
                    found.setdefault(path, target)
            if md.signed.delegations is None:
                continue
            if md.signed.delegations.succinct_roles is not None:
                # Hash bins split paths by hash, not by prefix: every bin may hold firmware.
                to_visit = list(
                    reversed(self._load_bins(md.signed.delegations.succinct_roles, prefix))
                )
                continue
            children = []
            for child, terminating in md.signed.delegations.get_roles_for_target(probe):
                children.append(child)
                if terminating:
                    to_visit = []
                    break
            to_visit.extend(reversed(children))
        return list(found.values())

    def _load_bins(self, bins: SuccinctRoles, prefix: str) -> list[str]:
        """Make ngclient load (and verify) every hash bin, by looking up one probe path per bin
        (unchanged bins come from its cache); returns the bin names."""
        wanted = set(bins.get_roles())
        probes: dict[str, str] = {}
        for i in range(len(wanted) * 64):  # a probe per bin, bounded
            if len(probes) == len(wanted):
                break
            path = f"{prefix}{LISTING_PROBE}-{i}"
            probes.setdefault(bins.get_role_for_target(path), path)
        for path in probes.values():
            if self.find_target(path) is not None:
                raise MetadataError(f"a target is published at the reserved path {path}")
        return sorted(probes)

    # -- target bytes ---------------------------------------------------------------------------

    def target_url(self, target: TargetFile) -> str:
        """The URL ngclient would download `target` from (hash-prefixed with consistent
        snapshots, as the verified root says).

        Raises:
            MetadataError: no verified root in the cache.
            ValueError: no targets URL configured.
        """
        if not self.targets_url:
            raise ValueError("no targets URL configured")
        try:
            root = Metadata[Root].from_bytes((self.metadata_dir / "root.json").read_bytes())
        except (OSError, DeserializationError) as e:
            raise MetadataError("no verified root in the metadata cache") from e
        consistent = isinstance(root.signed, Root) and root.signed.consistent_snapshot
        path = target.get_prefixed_paths()[0] if consistent else target.path
        return self.targets_url + quote(path)

    def open_target(self, target: TargetFile, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """Start streaming `target`'s bytes from `offset` (Range resume).

        Returns:
            The offset the stream really starts at, and the bytes.

        Raises:
            NetworkError: the transfer could not start.
        """
        url = self.target_url(target)
        try:
            return self.fetcher.fetch_from(url, offset)
        except exceptions.DownloadError as e:
            raise wrap_tuf_error(e, f"download of {target.path} failed") from e
