"""The server's request audit: JSON lines for downloads, uploads, reports and auth failures.

Kept in `.ota/server-audit.log`, apart from the publish log (`.ota/audit.log`, which every
accepted upload also extends through the repository manager). Hash-chained like the publish log
and the device's event log: each line ends with `seq` (0, 1, 2, ... in each file) and `prev`, the
SHA-256 of the line before it (`GENESIS` for the first), so an edited, removed, inserted or
reordered line breaks the chain (`ota-repo audit verify`). Several gunicorn workers, each with
threads, append to one file: each append holds a thread lock and an exclusive POSIX lock on
the file while it reads the last line and writes its own whole line with one `write()` call.

Suspicious patterns are marked with a `flag` field so they can be found with one grep:
`auth-failure-burst`, `metadata-version-regression`, `other-model-firmware`, `bad-path`,
`report-for-other-device`.
"""

from __future__ import annotations

import fcntl
import hashlib
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
GENESIS = "0" * 64
_TAIL = 64 * 1024


def line_hash(line: bytes) -> str:
    """The `prev` of the line after `line` (its bytes without the newline)."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(fd: int) -> bytes | None:
    """The last complete line of the file open at `fd`, or None if it has none."""
    size = os.lseek(fd, 0, os.SEEK_END)
    start = max(0, size - _TAIL)
    while True:
        data = os.pread(fd, size - start, start)
        end = data.rfind(b"\n")
        begin = data.rfind(b"\n", 0, end) + 1 if end >= 0 else -1
        if (end < 0 or begin == 0) and start > 0:
            start = max(0, start - _TAIL)  # a longer line than the window: look further back
            continue
        return data[begin:end] if end >= 0 else None


def chain_link(last: bytes | None) -> tuple[int, str]:
    """`seq` and `prev` of the line that follows `last` (None: the file is empty)."""
    if last is None:
        return 0, GENESIS
    try:
        seq = json.loads(last).get("seq")
    except (ValueError, AttributeError):
        seq = None
    return (seq + 1 if isinstance(seq, int) else 0), line_hash(last)


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
        self._append_lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._seen_lock = threading.Lock()
        self._second = 0
        self._prefix = ""

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _write(self, body: bytes) -> None:
        """Append `body` (a JSON object without its closing brace) with its chain link."""
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._reopen_if_rotated(now)
        try:
            with self._append_lock:
                fd = self._fd
                # A POSIX record lock belongs to the process, so it excludes workers forked
                # from one master even when they share this descriptor (a flock would not).
                fcntl.lockf(fd, fcntl.LOCK_EX)
                try:
                    seq, prev = chain_link(_last_line(fd))
                    os.write(fd, body + f',"seq":{seq},"prev":"{prev}"}}\n'.encode())
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
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
        self._write(json.dumps(entry, separators=(",", ":"), default=str).encode()[:-1])

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
        tail = f',"flag":"{flag}"' if flag else ""
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


def verify_request_log(path: Path) -> tuple[int, list[str]]:
    """Check the chain of a request log file: every line's `seq` one more than the line before
    it and its `prev` the hash of that line. Lines written before the log was chained (no
    `prev`) are accepted only at its start.

    Returns:
        The number of lines and the problems found, each naming its line.
    """
    problems: list[str] = []
    raw = path.read_bytes().splitlines()
    expected_seq, prev, chained = 0, GENESIS, False
    for n, line in enumerate(raw, 1):
        try:
            entry = json.loads(line)
            seq, linked = entry["seq"], entry["prev"]
        except (ValueError, KeyError, TypeError):
            if chained or b'"prev"' in line:
                problems.append(f"request log line {n}: not a chained JSON line (edited)")
            prev = line_hash(line)
            continue
        if not chained and n > 1 and (seq, linked) == (0, GENESIS):
            prev = GENESIS  # the chain starts after lines written before it existed
        chained = True
        if seq != expected_seq:
            problems.append(
                f"request log line {n}: seq {seq} where {expected_seq} was due "
                "(lines removed, inserted or reordered)"
            )
        elif linked != prev:
            problems.append(
                f"request log line {n}: chain broken: line {n - 1} was edited (or replaced)"
                if n > 1
                else f"request log line {n}: chain broken at the start"
            )
        expected_seq = seq + 1 if isinstance(seq, int) else expected_seq + 1
        prev = line_hash(line)
    return len(raw), problems


def request_log_head(path: Path) -> tuple[int, str] | None:
    """(`seq`, SHA-256) of the last line: an anchor to keep off the server, which a later
    `ota-repo audit verify --request-log-anchor SEQ:HASH` finds unchanged in the log."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        last = _last_line(fd)
    finally:
        os.close(fd)
    if last is None:
        return None
    seq = json.loads(last).get("seq")
    return (seq if isinstance(seq, int) else -1), line_hash(last)


def check_anchor(path: Path, seq: int, digest: str) -> str | None:
    """None if the line with `seq` still hashes to `digest`, else the problem."""
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("seq") == seq:
            if line_hash(line) == digest:
                return None
            return f"request log line {n} (seq {seq}) is not the line anchored: edited"
    return f"request log has no line with seq {seq}: lines removed since it was anchored"


def read_request_log(path: Path) -> list[dict[str, Any]]:
    """Every entry of a request audit log (for tests, status and operators' scripts)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
