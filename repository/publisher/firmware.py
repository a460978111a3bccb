"""The firmware contract a publisher writes and a device reads.

Image: `firmware/<hwid>/<name>-<version>.bin`; delta: `firmware/<hwid>/<name>-<from>-to-<to>.delta`.
The image's `custom` is `{"firmware": {"version", "hardware_ids", "security_counter",
"deltas": {from_version: delta_path}}}`; versions are dotted integers.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile, Targets

from repository.errors import BadInputError
from repository.targetfiles import validate_target_path

_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,5}\Z")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,63}\Z")


def check_version(version: str) -> str:
    """Raises:
    BadInputError: not a dotted-integer version such as 1.4.2.
    """
    if not _VERSION.match(version):
        raise BadInputError(f"version {version!r} is not dotted integers (like 1.4.2)")
    return version


def check_name(what: str, value: str) -> str:
    """Raises:
    BadInputError: a hardware id or image name outside [A-Za-z0-9_+-].
    """
    if not _NAME.match(value):
        raise BadInputError(f"bad {what} {value!r}: letters, digits, '_', '+', '-' only")
    return value


@dataclass
class FirmwareRelease:
    """One firmware image and its deltas, ready to become targets."""

    image: Path
    hwid: str
    version: str
    security_counter: int = 0
    deltas: list[tuple[str, Path]] = field(default_factory=list)
    name: str = "fw"

    def image_path(self) -> str:
        return f"firmware/{self.hwid}/{self.name}-{self.version}.bin"

    def delta_path(self, from_version: str) -> str:
        return f"firmware/{self.hwid}/{self.name}-{from_version}-to-{self.version}.delta"

    def files(self) -> list[tuple[Path, str, dict[str, Any]]]:
        """(local file, target path, custom) for the image and every delta.

        Raises:
            BadInputError: bad version, hardware id, name or security counter, or a delta from
                the same or a duplicate version.
        """
        check_name("hardware id", self.hwid)
        check_name("image name", self.name)
        check_version(self.version)
        if self.security_counter < 0:
            raise BadInputError("--security-counter must be 0 or more")
        deltas: dict[str, str] = {}
        result: list[tuple[Path, str, dict[str, Any]]] = []
        for from_version, delta_file in self.deltas:
            check_version(from_version)
            if from_version == self.version or from_version in deltas:
                raise BadInputError(f"delta from {from_version} given twice or to itself")
            path = validate_target_path(self.delta_path(from_version))
            deltas[from_version] = path
            custom = {
                "firmware_delta": {
                    "from": from_version,
                    "to": self.version,
                    "hardware_ids": [self.hwid],
                    "image": self.image_path(),
                }
            }
            result.append((delta_file, path, custom))
        firmware: dict[str, Any] = {
            "version": self.version,
            "hardware_ids": [self.hwid],
            "security_counter": self.security_counter,
        }
        if deltas:
            firmware["deltas"] = deltas
        image = (self.image, validate_target_path(self.image_path()), {"firmware": firmware})
        return [image, *result]


def describe_file(local: Path, target_path: str, custom: dict[str, Any]) -> TargetFile:
    """Length and SHA-256 of a local file as a TargetFile (nothing is copied).

    `ota-publish` passes its private copies (`repository.publisher.inputs`), never the files it
    was given: those are read once, by the copy.

    Raises:
        BadInputError: the file cannot be read, or is not a regular file.
    """
    try:
        if not stat.S_ISREG(os.stat(local).st_mode):
            raise BadInputError(f"not a regular file: {local}")
        tf = TargetFile.from_file(target_path, str(local), ["sha256"])
    except FileNotFoundError as e:
        raise BadInputError(f"file not found: {local}") from e
    except IsADirectoryError as e:
        raise BadInputError(f"not a file: {local}") from e
    except OSError as e:
        raise BadInputError(f"cannot read {local}: {e.strerror}") from e
    tf.unrecognized_fields["custom"] = custom
    return tf


def add_new_targets(role: Targets, infos: list[TargetFile]) -> None:
    """Add `infos` to `role`, refusing to change a target it lists already.

    A published version is immutable: devices may hold its bytes, and a second image under the
    same name would make "version 1.4.2" mean two things.

    Raises:
        BadInputError: a path is listed already (with the same or other bytes).
    """
    for tf in infos:
        listed = role.targets.get(tf.path)
        if listed is not None:
            same = listed.hashes == tf.hashes and listed.length == tf.length
            raise BadInputError(
                f"{tf.path} is published already"
                + ("" if same else " with other bytes: publish a new version instead")
            )
        role.targets[tf.path] = tf
