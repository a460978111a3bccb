"""Where a repository keeps its files, and its private configuration.

<repo>/metadata/   published TUF metadata (served)
<repo>/targets/    published firmware files, under consistent-snapshot names (served)
<repo>/.ota/       private, owner-only, never served: config, keys made by --dev, staging,
                   audit log, writer lock
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repository.errors import BadInputError, CorruptRepositoryError
from repository.fsutil import atomic_write, make_private_dir
from repository.secretfiles import CONFIG_LIMIT, UnsafeFileError, read_limited

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
DEFAULT_EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
DEFAULT_ONLINE_ROLES = ("snapshot", "timestamp")


@dataclass(frozen=True)
class RepoPaths:
    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def targets(self) -> Path:
        return self.root / "targets"

    @property
    def private(self) -> Path:
        return self.root / ".ota"

    @property
    def config(self) -> Path:
        return self.private / "config.json"

    @property
    def keys(self) -> Path:
        return self.private / "keys"

    @property
    def staging(self) -> Path:
        return self.private / "staging"

    @property
    def audit(self) -> Path:
        return self.private / "audit.log"

    @property
    def lock(self) -> Path:
        return self.private / "lock"

    def exists(self) -> bool:
        # whatever sits at the config path (a FIFO, a link) is a repository: reading it then
        # refuses it by name rather than calling the folder empty
        return os.path.lexists(self.config)

    def make_dirs(self) -> None:
        self.metadata.mkdir(parents=True, exist_ok=True)
        self.targets.mkdir(parents=True, exist_ok=True)
        make_private_dir(self.private)
        make_private_dir(self.keys)
        make_private_dir(self.staging)


@dataclass
class RepoConfig:
    """The repository's private settings (`.ota/config.json`).

    `signers` maps a role to the signer URIs this machine may use for it, each with its keyid.
    `extra` keeps sections owned by other parts (server, devices) intact across saves.
    """

    expiry_days: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EXPIRY_DAYS))
    online_roles: list[str] = field(default_factory=lambda: list(DEFAULT_ONLINE_ROLES))
    signers: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    dev: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def expiry_for(self, role: str) -> int:
        return self.expiry_days.get(role, self.expiry_days["targets"])

    def signer_uris(self, role: str) -> list[dict[str, str]]:
        return list(self.signers.get(role, []))

    def add_signer(self, role: str, keyid: str, uri: str) -> None:
        entries = [e for e in self.signers.get(role, []) if e["keyid"] != keyid]
        entries.append({"keyid": keyid, "uri": uri})
        self.signers[role] = entries

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "expiry_days": self.expiry_days,
            "online_roles": self.online_roles,
            "signers": self.signers,
            "dev": self.dev,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RepoConfig:
        data = dict(data)
        return cls(
            expiry_days={**DEFAULT_EXPIRY_DAYS, **data.pop("expiry_days", {})},
            online_roles=list(data.pop("online_roles", DEFAULT_ONLINE_ROLES)),
            signers=data.pop("signers", {}),
            dev=bool(data.pop("dev", False)),
            extra=data,
        )


def load_config(paths: RepoPaths) -> RepoConfig:
    """Raises:
    BadInputError: there is no repository at `paths.root`.
    CorruptRepositoryError: the config file cannot be read.
    """
    if not paths.exists():
        raise BadInputError(f"no repository at {paths.root} (run 'ota-repo init' first)")
    try:
        raw = read_limited(paths.config, what="repository config", limit=CONFIG_LIMIT)
    except UnsafeFileError as e:
        raise CorruptRepositoryError(str(e)) from e
    except OSError as e:
        raise CorruptRepositoryError(f"cannot read repository config {paths.config}") from e
    try:
        return RepoConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError, AttributeError) as e:
        raise CorruptRepositoryError(f"cannot read repository config {paths.config}") from e


def save_config(paths: RepoPaths, config: RepoConfig) -> None:
    data = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write(paths.config, data.encode(), mode=0o600)
