"""The device configuration: one TOML file (for example /etc/ota-client.toml).

Example::

    device_id = "dev-0001"
    hardware_id = "model-x"
    data_dir = "/var/lib/ota-client"
    trusted_root = "/etc/ota-client/root.json"

    [server]
    metadata_url = "https://ota.example.com/metadata/"
    targets_url = "https://ota.example.com/targets/"
    reports_url = "https://ota.example.com/api/v1/reports"
    ca_bundle = "/etc/ota-client/ca.pem"
    token_file = "/etc/ota-client/token"

    [slots]
    A = "/dev/mmcblk0p2"
    B = "/dev/mmcblk0p3"
    verify_from_medium = false   # true: read the image back from the medium while installing

    [boot]
    max_tries = 3
    health_check = ["/usr/libexec/ota-health-check"]

    [storage]
    device_key_file = "/etc/ota-client/device.key"   # optional: seal the resume record

Relative paths are resolved against the folder of the configuration file. Secrets (the token,
the client key) are referenced by path, never written in the configuration itself.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from client.errors import ConfigError, StorageError
from client.storage import read_limited

SLOT_NAMES = ("A", "B")
# Boot tries a new image gets before the fallback. Each try is a full reboot into an image that
# has not passed its health check; a build that fails ten boots in a row is broken, and more tries
# only keep the device down longer before it returns to the committed slot.
MAX_BOOT_TRIES = 10
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}\Z")
_DAY = 24 * 3600.0
# Bytes read at most from files named by path (a larger one is refused, as is anything but a
# regular file: a FIFO, /dev/zero, a directory).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_TOKEN_BYTES = 4096
MAX_CA_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_CERT_BYTES = 1024 * 1024
# Every number in the configuration is finite and within these bounds (inclusive), or the client
# refuses to start naming the key (docs/device-integrator.md lists them). Seconds unless named.
RANGES: dict[str, tuple[float, float]] = {
    "server.connect_timeout": (0.1, 600.0),
    "server.read_timeout": (0.1, 3600.0),
    "server.max_download_seconds": (1.0, 7 * _DAY),
    "server.min_rate_bytes": (0, 1_000_000_000),  # bytes per second
    "server.min_rate_grace_seconds": (0.0, _DAY),
    "boot.max_tries": (1, MAX_BOOT_TRIES),  # tries
    "boot.health_timeout": (0.1, _DAY),
    "agent.interval": (0.1, 30 * _DAY),
    "agent.jitter": (0.0, _DAY),
    "agent.max_backoff": (0.1, 30 * _DAY),
}


@dataclass(frozen=True)
class ServerConfig:
    metadata_url: str
    targets_url: str
    reports_url: str | None = None
    ca_bundle: Path | None = None
    token_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_download_seconds: float = 3600.0
    min_rate_bytes: int = 1024
    min_rate_grace_seconds: float = 30.0


@dataclass(frozen=True)
class BootConfig:
    max_tries: int = 3
    health_check: tuple[str, ...] = ()
    health_timeout: float = 120.0
    backend: str = "file"
    printenv: tuple[str, ...] = ("fw_printenv",)
    setenv: tuple[str, ...] = ("fw_setenv",)
    reboot_command: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentConfig:
    interval: float = 3600.0
    jitter: float = 600.0
    max_backoff: float = 6 * 3600.0


@dataclass(frozen=True)
class StorageConfig:
    device_key_file: Path | None = None  # 32 bytes, owner-only; None: nothing is encrypted


@dataclass(frozen=True)
class ClientConfig:
    device_id: str
    hardware_id: str
    data_dir: Path
    trusted_root: Path
    server: ServerConfig
    slots: dict[str, Path]
    boot: BootConfig = field(default_factory=BootConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    verify_from_medium: bool = False
    storage: StorageConfig = field(default_factory=StorageConfig)


class _Reader:
    """Typed access to one TOML table, naming the key in every error."""

    def __init__(self, table: dict[str, Any], where: str, base: Path):
        self.table = table
        self.where = where
        self.base = base

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise ConfigError(f"missing required setting {self._name(key)}")
            return default
        value = self.table[key]
        if isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{self._name(key)} must not be a boolean")
        if not isinstance(value, kind):
            raise ConfigError(f"{self._name(key)} has the wrong type ({type(value).__name__})")
        return value

    def text(self, key: str, default: Any = ...) -> Any:
        value = self.raw(key, str, default)
        if isinstance(value, str) and not value:
            raise ConfigError(f"{self._name(key)} is empty")
        return value

    def ident(self, key: str) -> str:
        value: str = self.text(key)
        if not _ID.match(value):
            raise ConfigError(f"{self._name(key)} must match [A-Za-z0-9_][A-Za-z0-9._+-]*")
        return value

    def path(self, key: str, default: Any = ...) -> Any:
        value = self.text(key, default)
        if value is None:
            return None
        return (self.base / value).resolve()

    def url(self, key: str, default: Any = ...) -> Any:
        value = self.text(key, default)
        if value is None:
            return None
        if not value.startswith("https://"):
            raise ConfigError(f"{self._name(key)} must be an https:// URL")
        # Never echo the value: a URL with a password in it is the reason for the refusal.
        try:
            parts = urlsplit(value)
            host = parts.hostname
            _ = parts.port
        except ValueError as e:
            raise ConfigError(f"{self._name(key)} is not a valid URL") from e
        if "@" in parts.netloc:
            raise ConfigError(
                f"{self._name(key)} must not carry a user name or password (user@ or "
                "user:secret@): the device authenticates with server.token_file or a client "
                "certificate"
            )
        if not host or any(c.isspace() or not c.isprintable() for c in value):
            raise ConfigError(f"{self._name(key)} is not a valid URL")
        return value

    def number(self, key: str, default: float, bounds: tuple[float, float]) -> float:
        """A finite number of seconds (or a rate) within `bounds` (see `RANGES`)."""
        value = self.raw(key, (int, float), default)
        minimum, maximum = bounds
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self._name(key)} must be a finite number, not {value}")
        if not minimum <= value <= maximum:
            raise ConfigError(f"{self._name(key)} must be between {minimum:g} and {maximum:g}")
        return float(value)

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value: int = self.raw(key, int, default)
        if value < minimum:
            raise ConfigError(f"{self._name(key)} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self._name(key)} must be at most {maximum}")
        return value

    def argv(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(key, list, list(default))
        if not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self._name(key)} must be a list of non-empty strings (argv)")
        return tuple(value)

    def sub(self, key: str, *, required: bool = False) -> _Reader:
        table = self.raw(key, dict, ... if required else {})
        return _Reader(table, self._name(key), self.base)

    def refuse_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.table) - known)
        if unknown:
            raise ConfigError(f"unknown setting {self._name(unknown[0])}")


def parse_config(data: dict[str, Any], base: Path) -> ClientConfig:
    """Build a `ClientConfig` from a parsed TOML document.

    Raises:
        ConfigError: a setting is missing, unknown or has a bad value.
    """
    top = _Reader(data, "", base)
    top.refuse_unknown(
        {
            "device_id",
            "hardware_id",
            "data_dir",
            "trusted_root",
            "server",
            "slots",
            "boot",
            "agent",
            "storage",
        }
    )
    s = top.sub("server", required=True)
    s.refuse_unknown({f for f in ServerConfig.__dataclass_fields__})
    server = ServerConfig(
        metadata_url=s.url("metadata_url"),
        targets_url=s.url("targets_url"),
        reports_url=s.url("reports_url", None),
        ca_bundle=s.path("ca_bundle", None),
        token_file=s.path("token_file", None),
        client_cert=s.path("client_cert", None),
        client_key=s.path("client_key", None),
        connect_timeout=s.number("connect_timeout", 10.0, RANGES["server.connect_timeout"]),
        read_timeout=s.number("read_timeout", 30.0, RANGES["server.read_timeout"]),
        max_download_seconds=s.number(
            "max_download_seconds", 3600.0, RANGES["server.max_download_seconds"]
        ),
        min_rate_bytes=s.integer(
            "min_rate_bytes", 1024, maximum=int(RANGES["server.min_rate_bytes"][1])
        ),
        min_rate_grace_seconds=s.number(
            "min_rate_grace_seconds", 30.0, RANGES["server.min_rate_grace_seconds"]
        ),
    )
    if (server.client_cert is None) != (server.client_key is None):
        raise ConfigError("server.client_cert and server.client_key go together")
    sl = top.sub("slots", required=True)
    sl.refuse_unknown({*SLOT_NAMES, "verify_from_medium"})
    slots = {name: sl.path(name) for name in SLOT_NAMES}
    from_medium: bool = sl.raw("verify_from_medium", bool, False)
    if slots["A"] == slots["B"]:
        raise ConfigError("slots.A and slots.B must be different")
    b = top.sub("boot")
    b.refuse_unknown({f for f in BootConfig.__dataclass_fields__})
    backend = b.text("backend", "file")
    if backend not in ("file", "uboot"):
        raise ConfigError("boot.backend must be 'file' or 'uboot'")
    boot = BootConfig(
        max_tries=b.integer("max_tries", 3, minimum=1, maximum=MAX_BOOT_TRIES),
        health_check=b.argv("health_check", ()),
        health_timeout=b.number("health_timeout", 120.0, RANGES["boot.health_timeout"]),
        backend=backend,
        printenv=b.argv("printenv", ("fw_printenv",)),
        setenv=b.argv("setenv", ("fw_setenv",)),
        reboot_command=b.argv("reboot_command", ()),
    )
    a = top.sub("agent")
    a.refuse_unknown({f for f in AgentConfig.__dataclass_fields__})
    agent = AgentConfig(
        interval=a.number("interval", 3600.0, RANGES["agent.interval"]),
        jitter=a.number("jitter", 600.0, RANGES["agent.jitter"]),
        max_backoff=a.number("max_backoff", 6 * 3600.0, RANGES["agent.max_backoff"]),
    )
    st = top.sub("storage")
    st.refuse_unknown({f for f in StorageConfig.__dataclass_fields__})
    storage = StorageConfig(device_key_file=st.path("device_key_file", None))
    return ClientConfig(
        device_id=top.ident("device_id"),
        hardware_id=top.ident("hardware_id"),
        data_dir=top.path("data_dir"),
        trusted_root=top.path("trusted_root"),
        server=server,
        slots=slots,
        boot=boot,
        agent=agent,
        verify_from_medium=from_medium,
        storage=storage,
    )


def load_config(path: Path) -> ClientConfig:
    """Read and validate the configuration file at `path`.

    Raises:
        ConfigError: the file cannot be read (or is not a regular file of at most
            `MAX_CONFIG_BYTES`), is not TOML, or has a bad setting.
    """
    try:
        data = tomllib.loads(read_limited(path, "configuration", MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"configuration file not found: {path}") from e
    except StorageError as e:
        raise ConfigError(str(e)) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read configuration {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"configuration {path} is not valid TOML: {e}") from e
    return parse_config(data, path.resolve().parent)
