"""The server's request audit: JSON lines for downloads, uploads, reports and auth failures.

Kept in `.ota/server-audit.log`, apart from the hash-chained publish log (`.ota/audit.log`,
which every accepted upload also extends through the repository manager): a fleet makes many
downloads, and each must cost one `write()` to an `O_APPEND` file, not a lock and a chain.
Lines from several workers never interleave: each is written whole by one `write()` call.

Suspicious patterns are marked with a `flag` field so they can be found with one grep:
`auth-failure-burst`, `metadata-version-regression`, `other-model-firmware`, `bad-path`,
`report-for-other-device`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_MAX_TRACKED = 100_000


def request_log_path(private_dir: Path) -> Path:
    return private_dir / "server-audit.log"


class RequestAudit:
    """Appends one JSON object per line. Thread- and process-safe; never raises to a caller."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = self._open()
        self._checked = time.monotonic()
        self._reopen_lock = threading.Lock()
        self._retired: int | None = None
        self._seen: dict[tuple[str, str], int] = {}
        self._seen_lock = threading.Lock()
        self._second = 0
        self._prefix = ""

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _write(self, line: bytes) -> None:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._reopen_if_rotated(now)
        try:
            os.write(self._fd, line)
        except OSError as e:  # a full disk must not take the fleet's updates down
            logger.error("cannot write the request audit log %s: %s", self.path, e.strerror)

    def _reopen_if_rotated(self, now: float) -> None:
        """Follow log rotation (the file renamed or removed): at most one check a second."""
        with self._reopen_lock:
            if now - self._checked < 1.0:
                return
            self._checked = now
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = -1
            except OSError:
                return
            if current != os.fstat(self._fd).st_ino:
                # Another thread may be writing to the old descriptor right now: close it only
                # at the next rotation, so its number is never reused under a write.
                if self._retired is not None:
                    os.close(self._retired)
                self._retired, self._fd = self._fd, self._open()

    def record(self, event: str, **fields: Any) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        entry.update(fields)
        self._write(json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n")

    def download(
        self, device: str | None, path: str, status: int, sent: int, remote: str, flag: str | None
    ) -> None:
        """The hot path of `record("download", ...)`: same JSON, built without a dict.

        Every field is already restricted to JSON-safe characters by the static path's
        grammar (device ids, %-encoded paths, IP addresses), so no escaping is needed.
        """
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        millis = int((now - second) * 1000)
        who = "null" if device is None else f'"{device}"'
        if '"' in remote or "\\" in remote or not remote.isprintable():
            remote = json.dumps(remote)[1:-1]
        tail = f',"flag":"{flag}"}}\n' if flag else "}\n"
        line = (
            f'{{"time":"{self._prefix}.{millis:03d}+00:00","event":"download","device":{who},'
            f'"path":"{path}","status":{status},"bytes":{sent},"remote":"{remote}"{tail}'
        )
        self._write(line.encode())

    def metadata_regression(self, device: str, role: str, version: int) -> int | None:
        """Remember the highest `version` of `role` this device fetched; return the earlier
        highest one if `version` is lower (a device going back in time is suspicious)."""
        key = (device, role)
        with self._seen_lock:
            before = self._seen.get(key, 0)
            if version > before:
                if len(self._seen) >= _MAX_TRACKED:
                    self._seen.clear()  # bounded memory; losing history only loses flags
                self._seen[key] = version
                return None
        return before if version < before else None

    def close(self) -> None:
        os.close(self._fd)


def read_request_log(path: Path) -> list[dict[str, Any]]:
    """Every entry of a request audit log (for tests, status and operators' scripts)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
