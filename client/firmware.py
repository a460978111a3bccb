"""The firmware contract: what a firmware target's `custom` field says, and the device policy.

Publishers write, for a target `firmware/<hwid>/<name>-<version>.bin`::

    {"firmware": {"version": "1.4.2", "hardware_ids": ["model-x"], "security_counter": 3,
                  "deltas": {"1.4.1": "firmware/model-x/fw-1.4.1-to-1.4.2.delta"}}}

Everything here runs on `TargetFile`s that python-tuf has verified. Parsing is strict and fails
closed: a missing or malformed field is an error, never a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tuf.api.metadata import TargetFile

from client.errors import (
    FirmwareFormatError,
    NotNewerError,
    SecurityCounterError,
    WrongHardwareError,
)

Version = tuple[int, ...]

_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,7}\Z")
_HWID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}\Z")
# One path segment, as the repository validates them (never ".", "..", empty or escaped).
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}\Z")
_MAX_COUNTER = 2**63 - 1
FIRMWARE_PREFIX = "firmware/"


def parse_version(text: object) -> Version:
    """Parse a dotted-integer version ("1.4.2") into a tuple of ints.

    Raises:
        FirmwareFormatError: anything but 1 to 8 dot-separated decimal integers
            without leading zeros.
    """
    if not isinstance(text, str) or not _VERSION.match(text):
        raise FirmwareFormatError(
            f"malformed version {text!r}: expected dotted integers like 1.4.2"
        )
    return tuple(int(part) for part in text.split("."))


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


def hardware_prefix(hardware_id: str) -> str:
    """Where the firmware for one hardware model is published."""
    return f"{FIRMWARE_PREFIX}{hardware_id}/"


@dataclass(frozen=True)
class Firmware:
    """A firmware image as described by a verified target.

    Attributes:
        target: The verified `TargetFile` (length and hashes the bytes must match).
        version: The version as an integer tuple, compared element-wise.
        hardware_ids: The hardware models the image runs on.
        security_counter: Anti-rollback level; a device never installs below its own.
        deltas: Delta target paths by the version they start from.
    """

    target: TargetFile
    version: Version
    hardware_ids: tuple[str, ...]
    security_counter: int
    deltas: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.path

    @property
    def version_text(self) -> str:
        return format_version(self.version)

    @classmethod
    def from_target(cls, target: TargetFile) -> Firmware:
        """Read the firmware fields of a verified target.

        Raises:
            FirmwareFormatError: the path or a field is missing or malformed.
        """
        where = target.path
        custom = target.unrecognized_fields.get("custom")
        if not isinstance(custom, dict) or not isinstance(custom.get("firmware"), dict):
            raise FirmwareFormatError(f"{where}: no custom.firmware object")
        fw: dict[str, Any] = custom["firmware"]
        try:
            version = parse_version(fw.get("version"))
        except FirmwareFormatError as e:
            raise FirmwareFormatError(f"{where}: {e}") from None
        hwids = fw.get("hardware_ids")
        if (
            not isinstance(hwids, list)
            or not hwids
            or not all(isinstance(h, str) and _HWID.match(h) for h in hwids)
        ):
            raise FirmwareFormatError(f"{where}: hardware_ids must be a non-empty list of ids")
        counter = fw.get("security_counter")
        if type(counter) is not int or not 0 <= counter <= _MAX_COUNTER:
            raise FirmwareFormatError(f"{where}: security_counter must be a non-negative integer")
        deltas = fw.get("deltas", {})
        if not isinstance(deltas, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in deltas.items()
        ):
            raise FirmwareFormatError(f"{where}: deltas must map versions to target paths")
        for start in deltas:
            parse_version(start)
        _check_path(where, version)
        return cls(target, version, tuple(hwids), counter, dict(deltas))


def _check_path(path: str, version: Version) -> None:
    parts = path.split("/")
    if not all(_SEGMENT.match(part) for part in parts):
        # the repository never publishes such names: %-escapes, backslashes, "..", spaces
        raise FirmwareFormatError(
            f"{path!r}: firmware names use only [A-Za-z0-9._+-] in each path segment"
        )
    if len(parts) != 3 or parts[0] != "firmware" or not parts[2].endswith(".bin"):
        raise FirmwareFormatError(
            f"{path}: firmware paths are firmware/<hwid>/<name>-<version>.bin"
        )
    suffix = f"-{format_version(version)}.bin"
    if not parts[2].endswith(suffix) or len(parts[2]) == len(suffix):
        raise FirmwareFormatError(
            f"{path}: file name does not carry the version {format_version(version)}"
        )


def check_policy(
    fw: Firmware, *, hardware_id: str, installed: Version | None, security_counter: int
) -> None:
    """Accept `fw` for this device or raise why not.

    Args:
        fw: Firmware parsed from a verified target.
        hardware_id: This device's hardware model.
        installed: The committed version, or None on a device with nothing recorded.
        security_counter: The device's monotonic security counter.

    Raises:
        WrongHardwareError: the image is for another model, or published outside this model's
            folder (only the role delegated `firmware/<hwid>/` speaks for that model).
        NotNewerError: the image is not strictly newer than the installed one.
        SecurityCounterError: the image's security counter is below the device's.
    """
    if hardware_id not in fw.hardware_ids:
        raise WrongHardwareError(
            f"refused {fw.path}: built for {', '.join(fw.hardware_ids)}, "
            f"this device is {hardware_id}"
        )
    if not fw.path.startswith(hardware_prefix(hardware_id)):
        raise WrongHardwareError(
            f"refused {fw.path}: published outside {hardware_prefix(hardware_id)}, "
            f"this device is {hardware_id}"
        )
    if installed is not None and fw.version <= installed:
        raise NotNewerError(
            f"refused {fw.path}: version {fw.version_text} is not newer than the installed "
            f"{format_version(installed)}"
        )
    if fw.security_counter < security_counter:
        raise SecurityCounterError(
            f"refused {fw.path}: security counter {fw.security_counter} is below the "
            f"device's {security_counter}"
        )
