"""Throttling of repeated authentication failures, shared by all worker processes.

A small memory-mapped table in the private folder (`.ota/server-throttle`) holds, per source
address (hashed into one of `SLOTS` slots), the start of its current window, its failures in it
and until when it is blocked. Recording a failure takes a file lock (failures are rare);
checking for a block, on every request, is one read of the mapping: no system call.
Two addresses that share a slot share a counter, which can only block sooner.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from pathlib import Path

SLOTS = 4096
_SLOT = struct.Struct("<Qddi4x")  # address key, window start, blocked until, failures
_SIZE = SLOTS * _SLOT.size


class Throttle:
    """Counts failures per source in windows of `window` seconds; `failures` in one window
    blocks the source for `block` seconds (0 failures: throttling off)."""

    def __init__(self, path: Path, failures: int, window: float, block: float) -> None:
        self._limit = failures
        self._window = window
        self._block = block
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self._fd).st_size != _SIZE:
            with self._locked():
                if os.fstat(self._fd).st_size != _SIZE:
                    os.ftruncate(self._fd, 0)  # a table from another version: start afresh
                    os.ftruncate(self._fd, _SIZE)
        self._map = mmap.mmap(self._fd, _SIZE)

    def _locked(self) -> _FileLock:
        return _FileLock(self._fd)

    @staticmethod
    def _key(source: str) -> tuple[int, int]:
        digest = hashlib.blake2b(source.encode("utf-8", "replace"), digest_size=8).digest()
        key = int.from_bytes(digest, "little") | 1  # never 0: 0 marks an empty slot
        return key, (key % SLOTS) * _SLOT.size

    def blocked_for(self, source: str) -> float:
        """Seconds this source must still wait (0: not blocked)."""
        if self._limit <= 0:
            return 0.0
        key, offset = self._key(source)
        found, _, until, _ = _SLOT.unpack_from(self._map, offset)
        if found != key:
            return 0.0
        left: float = until - time.monotonic()
        return max(0.0, left)

    def failed(self, source: str) -> bool:
        """Record a failure; True if this one started a block (a burst)."""
        if self._limit <= 0:
            return False
        key, offset = self._key(source)
        now = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process on this host
        with self._locked():
            found, start, until, count = _SLOT.unpack_from(self._map, offset)
            if found != key or now - start > self._window:
                start, until, count = now, 0.0, 0
            count += 1
            burst: bool = count >= self._limit
            if burst:
                until, count = now + self._block, 0
            _SLOT.pack_into(self._map, offset, key, start, until, count)
        return burst


class _FileLock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
