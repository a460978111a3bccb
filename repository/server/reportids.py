"""Which device reports were stored already, so that a retried report is stored once.

A device names each report with a `report_id` (32 lower-case hex characters, the same on every
retry). The pairs (device, report_id) are kept in a small SQLite file in the private folder
(`.ota/server-reports.sqlite`), shared by every worker process and kept across restarts. It is
bounded: an entry older than `RETENTION` seconds is forgotten (a device retries within minutes,
not weeks), and beyond `MAX_ENTRIES` the oldest go first.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from repository.errors import RepositoryError

REPORT_ID = re.compile(r"^[0-9a-f]{32}\Z")
RETENTION = 30 * 24 * 3600.0
MAX_ENTRIES = 1_000_000
_PRUNE_EVERY = 256  # stores between two checks of the entry count


class ReportStoreError(RepositoryError):
    """The store of seen report ids cannot be read or written (disk full, corrupt file)."""


def report_ids_path(private_dir: Path) -> Path:
    return private_dir / "server-reports.sqlite"


class SeenReports:
    """(device, report_id) pairs already stored. Thread- and process-safe.

    The connection is opened lazily in each process (the server forks its workers after
    building the app, and a SQLite connection must not cross a fork).
    """

    def __init__(
        self, path: Path, *, retention: float = RETENTION, max_entries: int = MAX_ENTRIES
    ) -> None:
        self.path = path
        self._retention = retention
        self._max = max_entries
        self._lock = threading.Lock()
        self._pid = -1
        self._db: sqlite3.Connection | None = None
        self._stores = 0

    def _connect(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)  # created owner-only before SQLite opens it
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )  # used under self._lock only
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS seen (device TEXT NOT NULL, report_id TEXT NOT NULL,"
                " stored REAL NOT NULL, PRIMARY KEY (device, report_id))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS seen_stored ON seen (stored)")
            self._db, self._pid = db, os.getpid()
        return self._db

    def store_once(self, device: str, report_id: str, store: Callable[[], None]) -> bool:
        """Call `store()` unless this device's `report_id` was stored before.

        The check, the store and the record happen in one write transaction, so two retries
        racing in two workers store the report once.

        Returns:
            True if `store()` ran, False for a duplicate.

        Raises:
            ReportStoreError: the store of seen ids cannot be used.
        """
        with self._lock:
            try:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")
                try:
                    now = time.time()
                    db.execute("DELETE FROM seen WHERE stored < ?", (now - self._retention,))
                    found = db.execute(
                        "SELECT 1 FROM seen WHERE device = ? AND report_id = ?",
                        (device, report_id),
                    ).fetchone()
                    if found is None:
                        db.execute(
                            "INSERT INTO seen (device, report_id, stored) VALUES (?, ?, ?)",
                            (device, report_id, now),
                        )
                        self._stores += 1
                        if self._stores % _PRUNE_EVERY == 0:
                            self._prune(db)
                        store()
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                self._db = None
                raise ReportStoreError(f"cannot use {self.path.name}: {e}") from None
            return found is None

    def _prune(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT count(*) FROM seen").fetchone()
        if count > self._max:
            db.execute(
                "DELETE FROM seen WHERE rowid IN (SELECT rowid FROM seen ORDER BY stored LIMIT ?)",
                (count - self._max,),
            )

    def count(self) -> int:
        with self._lock:
            (found,) = self._connect().execute("SELECT count(*) FROM seen").fetchone()
            return int(found)
