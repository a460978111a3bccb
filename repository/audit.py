"""Hash-chained, append-only audit log of publishes (JSON lines).

Each line carries `prev`, the SHA-256 of the previous line's bytes, so editing or removing a
line breaks the chain. The tail is anchored to the published timestamp: every publish writes a
new timestamp version and one audit line naming it, so a truncated log no longer reaches the
published version. Audit records are data, not logs: they never hold secrets.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repository.errors import CorruptRepositoryError

GENESIS = "0" * 64


def actor() -> str:
    """Who is publishing: OTA_ACTOR if set (CI names itself), else user@host."""
    explicit = os.environ.get("OTA_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def read_entries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except ValueError as e:
            raise CorruptRepositoryError(f"audit log line {n} is not JSON") from e
    return entries


def _last_hash(path: Path) -> str:
    if not path.exists() or path.stat().st_size == 0:
        return GENESIS
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    return _line_hash(lines[-1]) if lines else GENESIS


def append(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append `record` (plus time and chain link) and fsync. Caller holds the writer lock."""
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), **record}
    entry["prev"] = _last_hash(path)
    line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def last_timestamp_version(path: Path) -> int:
    versions = [
        e["versions"]["timestamp"]
        for e in read_entries(path)
        if "timestamp" in e.get("versions", {})
    ]
    return versions[-1] if versions else 0


@dataclass
class AuditReport:
    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: Path, published_timestamp_version: int) -> AuditReport:
    """Check the chain, that timestamp versions step by one, and that the tail is current."""
    problems: list[str] = []
    if not path.exists():
        return AuditReport(0, [f"audit log {path} is missing"])
    raw = path.read_bytes().splitlines()
    prev = GENESIS
    last_ts = 0
    for n, line in enumerate(raw, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(f"line {n}: not JSON (edited)")
            prev = _line_hash(line)
            continue
        if entry.get("prev") != prev:
            problems.append(f"line {n}: chain broken (a line before it was edited or removed)")
        prev = _line_hash(line)
        ts = entry.get("versions", {}).get("timestamp")
        if isinstance(ts, int):
            if last_ts and ts != last_ts + 1:
                problems.append(f"line {n}: timestamp v{ts} follows v{last_ts} (lines missing)")
            last_ts = ts
    if last_ts != published_timestamp_version:
        problems.append(
            f"log ends at timestamp v{last_ts} but v{published_timestamp_version} is published "
            "(lines removed from the end, or a publish was not recorded)"
        )
    return AuditReport(len(raw), problems)
