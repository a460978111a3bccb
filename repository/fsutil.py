"""Durable, atomic file operations.

A reader must see either the old or the new file, never a partial one, and a power cut must not
lose a rename: write to a temp file in the same folder, fsync it, os.replace, fsync the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from repository.errors import LockError

CHUNK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_copy_hashed(src: BinaryIO, dest_dir: Path, name_for: str) -> tuple[Path, str, int]:
    """Stream `src` into `dest_dir` as `<sha256>.<name_for>`, atomically.

    Returns:
        The final path, the hex SHA-256 and the length in bytes.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".upload.", suffix=".tmp")
    digest = hashlib.sha256()
    length = 0
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                length += len(chunk)
                f.write(chunk)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        final = dest_dir / f"{digest.hexdigest()}.{name_for}"
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest_dir)
    return final, digest.hexdigest(), length


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) owner-only; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


@contextlib.contextmanager
def exclusive_lock(path: Path, *, timeout: float) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path`, waiting up to `timeout` seconds.

    Raises:
        LockError: another writer kept the lock for longer than `timeout`.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"another ota-repo process is writing this repository (lock {path}); "
                        f"waited {timeout:g}s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock
