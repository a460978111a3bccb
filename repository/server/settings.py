"""Server settings: the repository's `server` config section, overridden by `create_app(config)`.

Production defaults are the safe ones (device authentication and upload tokens on; turning
upload tokens off is an explicit `"upload_tokens": false`). `ota-repo serve` turns device
authentication off unless the repository's config turns it on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from repository.errors import BadInputError
from repository.layout import RepoPaths, load_config

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server needs to know; see docs/operator.md for each setting."""

    repo: Path
    device_auth: bool = True
    upload_tokens: bool = True
    uploads: bool = True
    max_upload_bytes: int = 512 * MiB
    max_metadata_bytes: int = 5_000_000
    max_report_bytes: int = 16 * 1024
    shared_target_prefixes: tuple[str, ...] = ()
    throttle_failures: int = 10
    throttle_window: float = 60.0
    throttle_block: float = 60.0
    timestamp_max_age: int = 0
    audit_downloads: bool = True
    registry_reload_interval: float = 1.0
    lock_timeout: float = 30.0

    @property
    def paths(self) -> RepoPaths:
        return RepoPaths(self.repo)


_BOOL = {"device_auth", "upload_tokens", "uploads", "audit_downloads"}
_INT = {
    "max_upload_bytes",
    "max_metadata_bytes",
    "max_report_bytes",
    "throttle_failures",
    "timestamp_max_age",
}
_FLOAT = {"throttle_window", "throttle_block", "registry_reload_interval", "lock_timeout"}


def _coerce(name: str, value: Any) -> Any:
    if name in _BOOL:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise BadInputError(f"server setting {name} must be true or false, not {value!r}")
    if name in _INT or name in _FLOAT:
        kind = int if name in _INT else float
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise BadInputError(f"server setting {name} must be a number, not {value!r}") from None
        if isinstance(value, bool) or number < 0:
            raise BadInputError(f"server setting {name} must be a number >= 0, not {value!r}")
        return number
    if name == "shared_target_prefixes":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise BadInputError("server setting shared_target_prefixes must be a list of paths")
        for prefix in value:
            if prefix.startswith(("/", "firmware/")) or ".." in prefix or not prefix.endswith("/"):
                raise BadInputError(
                    f"shared target prefix {prefix!r} must be relative, end with '/', and lie "
                    "outside firmware/"
                )
        return tuple(value)
    raise BadInputError(f"unknown server setting {name!r}")


def load_settings(config: Mapping[str, Any] | None = None) -> ServerSettings:
    """Resolve settings: `config` > the repository's `server` section > defaults.

    The repository folder is `config["repo"]`, else the `OTA_REPO` environment variable.

    Raises:
        BadInputError: no repository, or a setting has a bad value.
        CorruptRepositoryError: the repository config cannot be read.
    """
    config = dict(config or {})
    repo_value = config.pop("repo", None) or os.environ.get("OTA_REPO")
    if not repo_value:
        raise BadInputError("no repository: set OTA_REPO or pass config={'repo': PATH}")
    repo = Path(repo_value).resolve()
    section = load_config(RepoPaths(repo)).extra.get("server", {})
    if not isinstance(section, dict):
        raise BadInputError("the repository config's 'server' section must be an object")
    known = {f.name for f in fields(ServerSettings)} - {"repo"}
    values: dict[str, Any] = {}
    for source in (section, config):
        for name, value in source.items():
            if name not in known:
                raise BadInputError(f"unknown server setting {name!r}")
            values[name] = _coerce(name, value)
    return replace(ServerSettings(repo=repo), **values)
