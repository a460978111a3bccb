"""Status reports to the server: queued on the device until the server accepts them.

A report is written to `reports/` in the data directory first (atomically), then sent with
`POST /api/v1/reports` and the device token. Only a 2xx answer removes it; anything else leaves
it for the next flush, except an answer saying the report itself is malformed (it is dropped, so
it cannot block the queue). Sending never raises into the update or boot that produced the report.

Each report carries a `report_id` (32 lower-case hex characters) chosen when it is queued and
stored with it, so every retry of that report (after a lost answer, after a restart) sends the
same id and the server stores it once. A report queued by an older client without one gets its
id written into the queue before it is first sent from here.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from tuf.api import exceptions

from client.errors import StorageError
from client.fetcher import DeviceFetcher
from client.storage import atomic_write, ensure_private_dir, fsync_dir

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000
# The report itself is wrong: sending it again cannot help, and it must not block the queue.
# (401/403 are kept: credentials can be fixed; 408/429/5xx are temporary.)
_PERMANENT = frozenset({400, 404, 405, 410, 413, 415, 422})


def new_report_id() -> str:
    """A fresh report id: 32 lower-case hex characters."""
    return secrets.token_hex(16)


def _with_id(path: Path, body: bytes) -> bytes:
    """`body` as queued, with a `report_id` written into the queue first if it has none.

    Raises:
        StorageError: the queued report cannot be rewritten.
    """
    try:
        report = json.loads(body)
    except ValueError:
        return body  # sent as it is: the server calls it malformed and it is dropped
    if not isinstance(report, dict) or "report_id" in report:
        return body
    report["report_id"] = new_report_id()
    body = json.dumps(report, sort_keys=True).encode()
    atomic_write(path, body)  # the id is durable before the first send that carries it
    return body


class ReportQueue:
    """The on-disk queue.

    Args:
        folder: `reports/` in the data directory.
        device_id: Sent in every report.
    """

    def __init__(self, folder: Path, device_id: str):
        self.folder = folder
        self.device_id = device_id

    def pending(self) -> list[Path]:
        try:
            return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith("."))
        except OSError:
            return []

    def enqueue(
        self,
        *,
        event: str,
        result: str,
        installed_version: str,
        slot: str | None,
        reason: str | None = None,
    ) -> Path:
        """Queue one report.

        Raises:
            StorageError: it cannot be written.
        """
        ensure_private_dir(self.folder)
        body: dict[str, Any] = {
            "device_id": self.device_id,
            "installed_version": installed_version,
            "slot": slot,
            "result": result,
            "reason": reason[:512] if reason else reason,
            "event": event,
            "report_id": new_report_id(),
        }
        path = self.folder / f"{time.time_ns():020d}-{os.getpid()}.json"
        atomic_write(path, json.dumps(body, sort_keys=True).encode())
        for old in self.pending()[:-MAX_QUEUED]:  # bounded: drop the oldest
            old.unlink(missing_ok=True)
        return path

    def flush(self, fetcher: DeviceFetcher, url: str | None, *, timeout: float = 10.0) -> int:
        """Send queued reports in order until one is not accepted; returns how many were sent."""
        if not url:
            return 0
        sent = 0
        changed = False
        for path in self.pending():
            try:
                body = _with_id(path, path.read_bytes())
                status = fetcher.post_json(url, body, timeout=timeout)
            except (OSError, exceptions.DownloadError, StorageError) as e:
                logger.info("report not sent (will retry): %s", e)
                break
            if status in _PERMANENT:
                logger.warning("server refused a report for good (HTTP %d): dropped", status)
                path.unlink(missing_ok=True)
                changed = True
                continue
            if not 200 <= status < 300:
                logger.info("server did not accept a report (HTTP %d): will retry", status)
                break
            path.unlink(missing_ok=True)
            sent += 1
            changed = True
        if changed:
            fsync_dir(self.folder)
        return sent
