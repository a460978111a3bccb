"""The limits on slow clients and their pure rules, for the server's gunicorn worker
(`repository.server.worker`): the limits from the environment, which request bodies the event
loop buffers, and the rate-limited log of dropped connections."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BUFFERED_BODY_MAX = 64 * 1024  # a body up to this size is read by the event loop
_LOG_WINDOW = 10.0
_LOG_BURST = 20


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    body_min_rate: int = 1024
    send_timeout: float = 30.0
    max_conns_per_ip: int = 64
    upload_threads: int = 4


_SECONDS = {
    "OTA_HANDSHAKE_TIMEOUT": "handshake_timeout",
    "OTA_HEADER_TIMEOUT": "header_timeout",
    "OTA_BODY_TIMEOUT": "body_timeout",
    "OTA_SEND_TIMEOUT": "send_timeout",
}
_COUNTS = {
    "OTA_BODY_MIN_RATE": ("body_min_rate", 0),
    "OTA_MAX_CONNS_PER_IP": ("max_conns_per_ip", 0),
    "OTA_UPLOAD_THREADS": ("upload_threads", 1),
}


def limits_from_env(environ: Mapping[str, str], *, threads: int) -> Limits:
    """The limits named by OTA_* variables in `environ`, defaults for the others.

    Raises:
        ValueError: a value is not a number in range (the message names the variable).
    """
    values: dict[str, Any] = {
        "upload_threads": max(1, threads // 4),
        "max_conns_per_ip": 0 if environ.get("OTA_PLAINTEXT") == "1" else 64,
    }
    for name, field in _SECONDS.items():
        raw = environ.get(name, "")
        if raw:
            try:
                seconds = float(raw)
            except ValueError:
                seconds = -1.0
            if not 0.1 <= seconds <= 3600:
                raise ValueError(f"{name} must be seconds between 0.1 and 3600, not {raw!r}")
            values[field] = seconds
    for name, (field, low) in _COUNTS.items():
        raw = environ.get(name, "")
        if raw:
            if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= 1_000_000:
                raise ValueError(f"{name} must be an integer from {low} to 1000000, not {raw!r}")
            values[field] = int(raw)
    return Limits(**values)


class DropLog:
    """One log line per dropped connection, at most `burst` lines of each kind per `window`
    seconds; the others are counted in one summary line per kind."""

    def __init__(self, log: Any, *, burst: int = _LOG_BURST, window: float = _LOG_WINDOW) -> None:
        self._log, self._burst, self._window = log, burst, window
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._lines: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()

    def _roll(self, now: float) -> None:
        if now - self._start < self._window:
            return
        for kind, count in sorted(self._suppressed.items()):
            self._log.warning(
                "dropped %d more connections (%s) in the last %.0f s, not logged one by one",
                count,
                kind,
                now - self._start,
            )
        self._start = now
        self._lines.clear()
        self._suppressed.clear()

    def flush(self) -> None:
        """Write the summary lines of a finished window (called by the event loop)."""
        with self._lock:
            self._roll(time.monotonic())

    def drop(self, peer: str, kind: str, detail: str = "") -> None:
        """Log that the connection from `peer` was dropped for `kind` (a short fixed phrase)."""
        with self._lock:
            self._roll(time.monotonic())
            if self._lines[kind] >= self._burst:
                self._suppressed[kind] += 1
                return
            self._lines[kind] += 1
        self._log.warning("dropped connection from %s: %s%s", peer, kind, detail)


def body_kind(head: bytes) -> int | None:
    """The Content-Length of a request head that may be buffered (0: no body), or None when
    its body is read by an upload thread (chunked, large, Expect, or headers gunicorn will
    judge)."""
    length: int | None = 0
    seen = False
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            value = value.strip()
            if seen or not value.isdigit() or len(value) > 12:
                return None
            seen, length = True, int(value)
    return length
