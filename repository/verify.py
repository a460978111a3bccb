"""`ota-repo verify`: check the published repository the way a device would.

A real `tuf.ngclient.Updater` starts from an empty cache and the trusted root, reads the
published folders through a fetcher that maps URLs to files, and downloads every target. Any
refusal by ngclient (signature, version, expiry, hash, length, a missing file) fails the check.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuf.api.exceptions import DownloadHTTPError
from tuf.api.exceptions import RepositoryError as TufRepositoryError
from tuf.api.metadata import Metadata, Snapshot, Targets
from tuf.api.serialization import DeserializationError
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from repository.errors import BadInputError, CorruptRepositoryError, VerificationError
from repository.layout import RepoPaths, load_config
from repository.manager import metadata_filename
from repository.secretfiles import ROOT_LIMIT, UnsafeFileError, read_limited

_BASE = "https://repository.invalid"
_CHUNK = 1024 * 1024


class DirectoryFetcher(FetcherInterface):
    """Serves `<base>/metadata/...` and `<base>/targets/...` from a repository folder.

    It moves bytes only; ngclient judges them. A missing file is a 404, as a server answers.
    """

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self.fetched: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = unquote(urlparse(url).path).lstrip("/")
        path = (self._root / rel).resolve()
        top = rel.split("/", 1)[0]
        if top not in ("metadata", "targets") or not path.is_relative_to(self._root / top):
            raise DownloadHTTPError(f"not served: {rel}", 404)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise DownloadHTTPError(f"not found: {rel}", 404) from None
        self.fetched.append(rel)
        return self._chunks(f)

    @staticmethod
    def _chunks(f: object) -> Iterator[bytes]:
        with f:  # type: ignore[attr-defined]
            while chunk := f.read(_CHUNK):  # type: ignore[attr-defined]
                yield chunk


@dataclass
class RoleExpiry:
    role: str
    version: int
    expires: datetime


@dataclass
class VerifyReport:
    roles: list[RoleExpiry] = field(default_factory=list)
    targets_checked: int = 0


def _published_target_paths(paths: RepoPaths) -> list[tuple[str, str]]:
    """(role, target path) for every target a client can reach: top-level targets and the
    roles targets delegates to now (snapshot keeps revoked roles, as TUF requires, but no
    client looks at them).

    Read straight from disk only to know what to ask for: each path is then looked up and
    downloaded through ngclient, which verifies everything on the way.
    """
    try:
        ts = Metadata.from_bytes((paths.metadata / "timestamp.json").read_bytes())
        snap_name = f"{ts.signed.snapshot_meta.version}.snapshot.json"  # type: ignore[attr-defined]
        snapshot = Metadata[Snapshot].from_bytes((paths.metadata / snap_name).read_bytes())

        def load(role: str) -> Targets:
            meta = snapshot.signed.meta[f"{role}.json"]
            filename = metadata_filename(role, meta.version)
            return Metadata[Targets].from_bytes((paths.metadata / filename).read_bytes()).signed

        top = load("targets")
        roles = ["targets"]
        if top.delegations is not None:
            if top.delegations.roles is not None:
                roles += list(top.delegations.roles)
            elif top.delegations.succinct_roles is not None:
                roles += list(top.delegations.succinct_roles.get_roles())
        for role in roles[1:]:  # a publisher's role may delegate on to its own hash bins
            inner = load(role).delegations if f"{role}.json" in snapshot.signed.meta else None
            if inner is not None and inner.succinct_roles is not None:
                roles += list(inner.succinct_roles.get_roles())
        result: list[tuple[str, str]] = []
        for role in roles:
            if f"{role}.json" in snapshot.signed.meta:  # a missing one is reported separately
                result.extend(
                    (role, path) for path in (top if role == "targets" else load(role)).targets
                )
        return result
    except (OSError, DeserializationError, AttributeError, KeyError) as e:
        raise VerificationError(f"published metadata unreadable: {e}") from e


_DEFAULTS = UpdaterConfig()
# What a device downloads at most of each kind of metadata: ngclient's defaults, unless the
# repository config sets `metadata_budget` (the devices' own UpdaterConfig may be set to match).
DEFAULT_BUDGET = {
    "root": _DEFAULTS.root_max_length,
    "timestamp": _DEFAULTS.timestamp_max_length,
    "snapshot": _DEFAULTS.snapshot_max_length,
    "targets": _DEFAULTS.targets_max_length,  # every targets-type role: delegated, bins
}


def metadata_budget(paths: RepoPaths, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """The byte budget per kind of metadata: defaults, the config's `metadata_budget`, then
    `overrides`.

    Raises:
        BadInputError: a budget is not a positive whole number of bytes, or names no kind.
    """
    budget = dict(DEFAULT_BUDGET)
    configured = load_config(paths).extra.get("metadata_budget", {}) if paths.exists() else {}
    for source in (configured, overrides or {}):
        if not isinstance(source, dict):
            raise BadInputError("metadata_budget in the repository config must be an object")
        for kind, limit in source.items():
            if kind not in budget or not isinstance(limit, int) or limit < 1:
                raise BadInputError(
                    f"metadata budget {kind}={limit!r}: use one of {', '.join(budget)} "
                    "with a whole number of bytes"
                )
            budget[kind] = limit
    return budget


def _over_budget(paths: RepoPaths, budget: dict[str, int]) -> list[str]:
    """Every published file a client would download that is larger than its budget: each root
    version, timestamp, the snapshot it names, and every role at the version snapshot names."""
    files: list[tuple[str, str]] = [("root", p.name) for p in paths.metadata.glob("*.root.json")]
    files.append(("timestamp", "timestamp.json"))
    try:
        ts = Metadata.from_bytes((paths.metadata / "timestamp.json").read_bytes())
        snap_name = f"{ts.signed.snapshot_meta.version}.snapshot.json"  # type: ignore[attr-defined]
        snapshot = Metadata[Snapshot].from_bytes((paths.metadata / snap_name).read_bytes())
    except (OSError, DeserializationError, AttributeError) as e:
        raise VerificationError(f"published metadata unreadable: {e}") from e
    files.append(("snapshot", snap_name))
    for name, meta in snapshot.signed.meta.items():
        files.append(("targets", metadata_filename(name[: -len(".json")], meta.version)))
    over = []
    for kind, filename in sorted(files):
        try:
            size = (paths.metadata / filename).stat().st_size
        except FileNotFoundError:
            continue  # reported by the client run as missing
        if size > budget[kind]:
            over.append(
                f"metadata/{filename} is {size} bytes, over the {kind} budget of {budget[kind]}"
            )
    return over


def verify_repository(
    root: Path,
    *,
    trusted_root: Path | None = None,
    days: float = 0,
    budget: dict[str, int] | None = None,
) -> VerifyReport:
    """Verify the repository at `root` as a fresh client would.

    Args:
        trusted_root: the root a device is provisioned with (default `metadata/1.root.json`).
        days: fail if any role expires within this many days.
        budget: bytes per kind of metadata (root, timestamp, snapshot, targets) over the
            config's `metadata_budget` and ngclient's defaults.

    Raises:
        VerificationError: a client would refuse the repository, a file is over its budget,
            or a role expires too soon.
        BadInputError: a budget is malformed.
    """
    paths = RepoPaths(root.resolve())
    limits = metadata_budget(paths, budget)
    over = _over_budget(paths, limits)
    if over:
        raise VerificationError(
            f"{len(over)} metadata file(s) over budget, devices would refuse them: "
            + "; ".join(over)
        )
    trusted_root = trusted_root or paths.metadata / "1.root.json"
    try:
        bootstrap = read_limited(trusted_root, what="trusted root", limit=ROOT_LIMIT)
    except UnsafeFileError as e:
        raise VerificationError(str(e)) from e
    except OSError as e:
        raise VerificationError(f"cannot read trusted root {trusted_root}: {e.strerror}") from e
    report = VerifyReport()
    with tempfile.TemporaryDirectory(prefix="ota-verify-") as tmp:
        cache = Path(tmp) / "metadata"
        downloads = Path(tmp) / "targets"
        cache.mkdir()
        downloads.mkdir()
        updater = Updater(
            str(cache),
            f"{_BASE}/metadata/",
            str(downloads),
            f"{_BASE}/targets/",
            fetcher=DirectoryFetcher(paths.root),
            bootstrap=bootstrap,
            config=UpdaterConfig(
                root_max_length=limits["root"],
                timestamp_max_length=limits["timestamp"],
                snapshot_max_length=limits["snapshot"],
                targets_max_length=limits["targets"],
            ),
        )
        try:
            updater.refresh()
            _check_delegated_roles_published(cache)
            for role, target_path in _published_target_paths(paths):
                info = updater.get_targetinfo(target_path)
                if info is None:
                    raise VerificationError(
                        f"target {target_path} (listed by {role}) is not reachable by a client"
                    )
                updater.download_target(info, str(downloads / "t"))
                report.targets_checked += 1
        except TufRepositoryError as e:
            raise VerificationError(f"a client refuses this repository: {_describe(e)}") from e
        except DownloadHTTPError as e:
            raise VerificationError(f"a client cannot download: {e}") from e
        report.roles = _cached_expiries(cache)
    _check_expiry(report, days)
    return report


def _check_delegated_roles_published(cache: Path) -> None:
    """Every role that targets delegates to must be in snapshot, or a client looking up any
    path of that delegation fails. Reads the copies ngclient cached after verifying them."""
    try:
        targets = Metadata[Targets].from_bytes((cache / "targets.json").read_bytes()).signed
        snapshot = Metadata[Snapshot].from_bytes((cache / "snapshot.json").read_bytes()).signed
    except (OSError, DeserializationError) as e:
        raise CorruptRepositoryError(f"verified cache unreadable: {e}") from e
    delegations = targets.delegations
    if delegations is None:
        return
    if delegations.roles is not None:
        names = list(delegations.roles)
    elif delegations.succinct_roles is not None:
        names = list(delegations.succinct_roles.get_roles())
    else:
        names = []
    missing = [name for name in names if f"{name}.json" not in snapshot.meta]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise VerificationError(
            f"targets delegates to {shown} but snapshot lists no metadata for it: "
            "a client looking up its paths fails"
        )


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _cached_expiries(cache: Path) -> list[RoleExpiry]:
    """Expiry of every role ngclient verified (it caches the exact bytes it accepted)."""
    roles = []
    for path in sorted(cache.glob("*.json")):
        try:
            md = Metadata.from_bytes(path.read_bytes())
        except DeserializationError as e:
            raise CorruptRepositoryError(f"verified cache unreadable: {path.name}") from e
        roles.append(RoleExpiry(path.stem, md.signed.version, md.signed.expires))
    return roles


def _check_expiry(report: VerifyReport, days: float) -> None:
    limit = datetime.now(UTC) + timedelta(days=days)
    soon = [r for r in report.roles if r.expires <= limit]
    if soon:
        listed = ", ".join(f"{r.role} v{r.version} on {r.expires:%Y-%m-%d %H:%M}Z" for r in soon)
        raise VerificationError(f"expires within {days:g} days: {listed}")
