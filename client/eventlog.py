"""The append-only event log: one hash-chained JSON line per check, download, install, boot...

Each record carries `seq` and `prev`, the SHA-256 of the previous line, so editing, inserting or
removing a record in the middle breaks the chain (`ota-client log verify`). A line cut short by a
power loss at the very end is reported as a torn tail and dropped by the next append. Records are
data, not logs: they hold no secret.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.errors import LogCorruptError, StorageError
from client.storage import FILE_MODE

GENESIS = "0" * 64
_TAIL = 64 * 1024


def _digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


@dataclass(frozen=True)
class LogCheck:
    records: int
    head: str
    torn_tail: bool


class EventLog:
    """Hash-chained JSON lines in `path`.

    Args:
        path: The log file (created owner-only).
        device_id: Written into every record.
    """

    def __init__(self, path: Path, device_id: str):
        self.path = path
        self.device_id = device_id

    def _last_line(self, fd: int) -> tuple[bytes | None, int]:
        """The last complete line and the size up to its end (dropping a torn tail)."""
        size = os.lseek(fd, 0, os.SEEK_END)
        start = max(0, size - _TAIL)
        while True:
            data = os.pread(fd, size - start, start)
            end = data.rfind(b"\n")
            if end < 0 and start > 0:
                start = max(0, start - _TAIL)
                continue
            if end < 0:
                return None, 0
            begin = data.rfind(b"\n", 0, end) + 1
            if begin == 0 and start > 0:
                start = max(0, start - _TAIL)
                continue
            return data[begin:end], start + end + 1

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record; returns it.

        Raises:
            StorageError: the log cannot be written.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as e:
            raise StorageError(f"cannot open event log {self.path}: {e.strerror}") from e
        try:
            last, good_size = self._last_line(fd)
            if os.lseek(fd, 0, os.SEEK_END) != good_size:
                os.ftruncate(fd, good_size)  # a record torn by power loss
            prev, seq = GENESIS, 0
            if last is not None:
                try:
                    seq = int(json.loads(last)["seq"]) + 1
                except (ValueError, KeyError, TypeError):
                    # A damaged record: keep logging (chained to its bytes, numbered by
                    # position); `log verify` still reports the damage.
                    seq = os.pread(fd, good_size, 0).count(b"\n")
                prev = _digest(last)
            record = {
                "seq": seq,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "device_id": self.device_id,
                "event": event,
                **{k: v for k, v in fields.items() if v is not None},
                "prev": prev,
            }
            line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            os.pwrite(fd, line + b"\n", good_size)
            os.fsync(fd)
        except OSError as e:
            raise StorageError(f"cannot write event log {self.path}: {e.strerror}") from e
        finally:
            os.close(fd)
        return record

    def records(self) -> list[dict[str, Any]]:
        """All complete records (unverified; use `verify` to check the chain).

        Raises:
            StorageError: the log cannot be read.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"cannot read event log {self.path}: {e.strerror}") from e
        out = []
        for line in data.split(b"\n")[:-1]:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def verify(self) -> LogCheck:
        """Check the whole chain.

        Raises:
            LogCorruptError: a record is malformed, out of sequence or does not chain.
            StorageError: the log cannot be read.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return LogCheck(0, GENESIS, False)
        except OSError as e:
            raise StorageError(f"cannot read event log {self.path}: {e.strerror}") from e
        lines = data.split(b"\n")
        torn = lines[-1] != b""
        prev = GENESIS
        for number, line in enumerate(lines[:-1], 1):
            try:
                record = json.loads(line)
                seq, linked = record["seq"], record["prev"]
            except (ValueError, KeyError, TypeError) as e:
                raise LogCorruptError(f"event log line {number} is not a valid record") from e
            if seq != number - 1:
                raise LogCorruptError(
                    f"event log line {number} has seq {seq}, expected {number - 1}"
                )
            if linked != prev:
                raise LogCorruptError(
                    f"event log line {number} does not chain to the line before "
                    "(edited, inserted or removed records)"
                )
            prev = _digest(line)
        return LogCheck(len(lines) - 1, prev, torn)
