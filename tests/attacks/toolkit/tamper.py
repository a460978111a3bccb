"""The local attacker: writes to the device's storage while the client is not looking.

Everything here changes files exactly as an attacker with brief write access (or bit rot)
would, keeping them owner-only so the device's permission check is not what refuses them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.attacks.toolkit.device import LabDevice


def write_private(path: Path, data: bytes) -> None:
    """Replace a file's bytes (owner-only, as the device's own files are)."""
    if path.is_symlink():
        path.unlink()
    path.write_bytes(data)
    path.chmod(0o600)


def flip(path: Path, offset: int, data: bytes = b"EVIL") -> None:
    """Overwrite bytes in place (a slot, a partial download)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def metadata_cache(dev: LabDevice) -> Path:
    """ngclient's metadata cache in the device's data directory."""
    return dev.data_dir / "metadata"


def plant_metadata(dev: LabDevice, files: dict[str, bytes]) -> None:
    """Put forged metadata files into the cache (`root_history/2.root.json`, `timestamp.json`
    ...); `root.json` replaces the link to the trusted root with a plain file."""
    folder = metadata_cache(dev)
    for name, data in files.items():
        write_private(folder / name, data)


def wipe_metadata(dev: LabDevice) -> None:
    shutil.rmtree(metadata_cache(dev))


def resume_record(dev: LabDevice) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((dev.data_dir / "download.json").read_text())
    return value


def rewrite_resume_record(dev: LabDevice, **changes: Any) -> None:
    """Change fields of the interrupted download's resume record (e.g. `offset`)."""
    record = resume_record(dev)
    record.update(changes)
    write_private(dev.data_dir / "download.json", json.dumps(record).encode())
