"""The device registry: which devices may fetch, with which hardware model, by which token.

Kept in `.ota/devices.json` (private, owner-only), next to the repository config but in its own
file so that key ceremonies rewriting `config.json` never race with device registration.
A token is shown once when it is made and stored only as its SHA-256: tokens are 256 random
bits, so a fast hash is as strong as a slow one here and keeps every request cheap.

The same file holds upload tokens for publishers (optional, per delegated role).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repository.errors import BadInputError, CorruptRepositoryError
from repository.fsutil import atomic_write, exclusive_lock
from repository.layout import RepoPaths
from repository.secretfiles import CONFIG_LIMIT, UnsafeFileError, read_limited

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
DEVICE_TOKEN_PREFIX = "otad_"  # noqa: S105 - a label, not a secret
UPLOAD_TOKEN_PREFIX = "otau_"  # noqa: S105 - a label, not a secret
_LOCK_TIMEOUT = 30.0


def registry_path(paths: RepoPaths) -> Path:
    return paths.private / "devices.json"


def hash_token(token: str) -> str:
    """The stored form of a token (hex SHA-256 of its UTF-8 bytes)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def validate_id(value: str, what: str) -> str:
    """Return `value` if it is a safe identifier (device id, hardware model, publisher name).

    Raises:
        BadInputError: empty, too long, or characters outside [A-Za-z0-9._-].
    """
    if not _ID.match(value):
        raise BadInputError(
            f"{what} must be 1-64 characters of [A-Za-z0-9._-], starting with a letter or "
            f"digit: {value!r}"
        )
    return value


@dataclass(frozen=True)
class Device:
    device_id: str
    hwid: str
    token_sha256: str
    added: str

    def to_dict(self) -> dict[str, str]:
        return {"hwid": self.hwid, "token_sha256": self.token_sha256, "added": self.added}


@dataclass(frozen=True)
class Uploader:
    name: str
    roles: tuple[str, ...]
    token_sha256: str
    added: str

    def to_dict(self) -> dict[str, Any]:
        return {"roles": list(self.roles), "token_sha256": self.token_sha256, "added": self.added}


class Registry:
    """An immutable snapshot of the registry with lookups by token hash."""

    def __init__(self, devices: dict[str, Device], uploaders: dict[str, Uploader]) -> None:
        self.devices = devices
        self.uploaders = uploaders
        self._devices_by_hash = {d.token_sha256: d for d in devices.values()}
        self._uploaders_by_hash = {u.token_sha256: u for u in uploaders.values()}

    @classmethod
    def empty(cls) -> Registry:
        return cls({}, {})

    def device_for_token(self, token: str) -> Device | None:
        return self._devices_by_hash.get(hash_token(token))

    def uploader_for_token(self, token: str) -> Uploader | None:
        return self._uploaders_by_hash.get(hash_token(token))

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": {k: v.to_dict() for k, v in sorted(self.devices.items())},
            "uploaders": {k: v.to_dict() for k, v in sorted(self.uploaders.items())},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Registry:
        """Raises:
        CorruptRepositoryError: the data is not a registry.
        """
        try:
            devices = {
                str(k): Device(str(k), str(v["hwid"]), str(v["token_sha256"]), str(v["added"]))
                for k, v in data.get("devices", {}).items()
            }
            uploaders = {
                str(k): Uploader(
                    str(k),
                    tuple(str(r) for r in v["roles"]),
                    str(v["token_sha256"]),
                    str(v["added"]),
                )
                for k, v in data.get("uploaders", {}).items()
            }
        except (AttributeError, KeyError, TypeError) as e:
            raise CorruptRepositoryError("device registry (.ota/devices.json) is malformed") from e
        ids = (*devices, *uploaders, *(d.hwid for d in devices.values()))
        if not all(_ID.match(name) for name in ids):
            raise CorruptRepositoryError("device registry (.ota/devices.json) has a bad id")
        return cls(devices, uploaders)


def load_registry(paths: RepoPaths) -> Registry:
    """Read the registry; a repository without one has no devices.

    Raises:
        CorruptRepositoryError: the file exists but cannot be read.
    """
    path = registry_path(paths)
    try:
        raw = read_limited(path, what="device registry", limit=CONFIG_LIMIT)
    except FileNotFoundError:
        return Registry.empty()
    except UnsafeFileError as e:
        raise CorruptRepositoryError(str(e)) from e
    except OSError as e:
        raise CorruptRepositoryError(f"cannot read device registry {path}") from e
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise CorruptRepositoryError(f"device registry {path} is not JSON") from e
    return Registry.from_dict(data)


def _save(paths: RepoPaths, registry: Registry) -> None:
    data = json.dumps(registry.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write(registry_path(paths), data.encode(), mode=0o600)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_repo(paths: RepoPaths) -> None:
    if not paths.exists():
        raise BadInputError(f"no repository at {paths.root} (run 'ota-repo init' first)")


def add_device(paths: RepoPaths, device_id: str, hwid: str) -> str:
    """Register a device and return its new token (the only time it exists in clear).

    Raises:
        BadInputError: bad id or model, no repository, or the device exists already.
    """
    validate_id(device_id, "device id")
    validate_id(hwid, "hardware model")
    _check_repo(paths)
    token = DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with exclusive_lock(registry_path(paths).with_suffix(".lock"), timeout=_LOCK_TIMEOUT):
        reg = load_registry(paths)
        if device_id in reg.devices:
            raise BadInputError(f"device {device_id} exists already (remove it first)")
        devices = dict(reg.devices)
        devices[device_id] = Device(device_id, hwid, hash_token(token), _now())
        _save(paths, Registry(devices, reg.uploaders))
    return token


def remove_device(paths: RepoPaths, device_id: str) -> None:
    """Raises:
    BadInputError: no such device.
    """
    _check_repo(paths)
    with exclusive_lock(registry_path(paths).with_suffix(".lock"), timeout=_LOCK_TIMEOUT):
        reg = load_registry(paths)
        if device_id not in reg.devices:
            raise BadInputError(f"no device {device_id!r}")
        devices = {k: v for k, v in reg.devices.items() if k != device_id}
        _save(paths, Registry(devices, reg.uploaders))


def add_uploader(paths: RepoPaths, name: str, roles: list[str]) -> str:
    """Register an upload token for a publisher, limited to `roles`; return the token.

    Raises:
        BadInputError: bad name, no roles, or the name exists already.
    """
    validate_id(name, "publisher name")
    if not roles:
        raise BadInputError("an upload token needs at least one role")
    _check_repo(paths)
    token = UPLOAD_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with exclusive_lock(registry_path(paths).with_suffix(".lock"), timeout=_LOCK_TIMEOUT):
        reg = load_registry(paths)
        if name in reg.uploaders:
            raise BadInputError(f"publisher {name} has a token already (remove it first)")
        uploaders = dict(reg.uploaders)
        uploaders[name] = Uploader(name, tuple(sorted(set(roles))), hash_token(token), _now())
        _save(paths, Registry(reg.devices, uploaders))
    return token


def remove_uploader(paths: RepoPaths, name: str) -> None:
    """Raises:
    BadInputError: no such publisher.
    """
    _check_repo(paths)
    with exclusive_lock(registry_path(paths).with_suffix(".lock"), timeout=_LOCK_TIMEOUT):
        reg = load_registry(paths)
        if name not in reg.uploaders:
            raise BadInputError(f"no upload token for {name!r}")
        uploaders = {k: v for k, v in reg.uploaders.items() if k != name}
        _save(paths, Registry(reg.devices, uploaders))
