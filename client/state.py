"""The device's install state: what each slot holds, the security counter, rejected images.

`state.json` in the data directory records, for each slot, the verified `TargetFile` its image
was installed from (length and hashes, so a slot is re-verified before every boot), and the
firmware version and security counter of that image. Written atomically.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile

from client.config import SLOT_NAMES
from client.errors import StorageError
from client.firmware import Firmware, Version, parse_version
from client.sealed import DeviceKey
from client.storage import atomic_write, read_checked, read_json, write_checked


@dataclass(frozen=True)
class SlotRecord:
    """The verified target a slot's image was installed from."""

    target: TargetFile
    version: Version
    security_counter: int

    @classmethod
    def of(cls, fw: Firmware) -> SlotRecord:
        return cls(fw.target, fw.version, fw.security_counter)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.target.path,
            "target": self.target.to_dict(),
            "version": self.version_text,
            "security_counter": self.security_counter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlotRecord:
        target = TargetFile.from_dict(copy.deepcopy(data["target"]), data["path"])
        return cls(target, parse_version(data["version"]), int(data["security_counter"]))


@dataclass
class DeviceState:
    """Install state (mutable; save with `StateStore.save`)."""

    slots: dict[str, SlotRecord | None] = field(default_factory=lambda: dict.fromkeys(SLOT_NAMES))
    security_counter: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    pending_trial: str | None = None

    def is_rejected(self, target: TargetFile) -> bool:
        mark = {"path": target.path, "sha256": target.hashes.get("sha256", "")}
        return mark in self.rejected

    def reject(self, target: TargetFile) -> None:
        if not self.is_rejected(target):
            self.rejected.append({"path": target.path, "sha256": target.hashes.get("sha256", "")})
            del self.rejected[:-32]  # bounded

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": {k: (v.to_dict() if v else None) for k, v in self.slots.items()},
            "security_counter": self.security_counter,
            "rejected": self.rejected,
            "pending_trial": self.pending_trial,
        }


def _parse(data: Any) -> DeviceState:
    if data is None:
        return DeviceState()
    state = DeviceState(
        slots={
            name: (SlotRecord.from_dict(data["slots"][name]) if data["slots"].get(name) else None)
            for name in SLOT_NAMES
        },
        security_counter=int(data["security_counter"]),
        rejected=[
            {"path": str(r["path"]), "sha256": str(r["sha256"])} for r in data.get("rejected", [])
        ],
        pending_trial=data.get("pending_trial"),
    )
    if state.pending_trial not in (None, *SLOT_NAMES) or state.security_counter < 0:
        raise ValueError("inconsistent state")
    return state


class StateStore:
    """Reads and writes `state.json` (and the download resume record).

    With a device key the resume record is sealed (`download.sealed`) instead of plain JSON
    (`download.json`); a record of the other kind is ignored (the download starts over) and
    removed with the next `clear_download`.
    """

    def __init__(self, data_dir: Path, *, key: DeviceKey | None = None):
        self.path = data_dir / "state.json"
        self._key = key
        self._plain_download = data_dir / "download.json"
        self._sealed_download = data_dir / "download.sealed"
        self.download_path = self._plain_download if key is None else self._sealed_download

    def load(self) -> DeviceState:
        """Raises:
        StorageError: both copies of the state are damaged.
        """
        return read_checked(self.path, None, _parse)

    def save(self, state: DeviceState) -> None:
        """Raises:
        StorageError: it cannot be written.
        """
        write_checked(self.path, state.to_dict())

    # -- download resume record ------------------------------------------------------------------

    def load_download(self) -> dict[str, Any] | None:
        """The resume record of an interrupted download, or None.

        Raises:
            TamperedError: the sealed record does not authenticate with the device key.
            StorageError: the sealed record cannot be read.
        """
        if self._key is None:
            try:
                data = read_json(self.download_path, None)
            except StorageError:
                return None  # a torn record only costs a restart from zero
        else:
            plain = self._key.read(self.download_path, purpose="download")
            if plain is None:
                return None
            try:
                data = json.loads(plain)
            except ValueError:
                return None
        return data if isinstance(data, dict) else None

    def save_download(self, record: dict[str, Any]) -> None:
        """Raises:
        StorageError: it cannot be written.
        """
        data = json.dumps(record, indent=1, sort_keys=True).encode() + b"\n"
        if self._key is None:
            atomic_write(self.download_path, data)
        else:
            self._key.write(self.download_path, data, purpose="download")

    def clear_download(self) -> None:
        """Forget the resume record (of either kind).

        Raises:
            StorageError: it cannot be removed.
        """
        for path in (self._plain_download, self._sealed_download):
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise StorageError(f"cannot remove {path}: {e.strerror}") from e
