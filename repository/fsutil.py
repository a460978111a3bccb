"""Durable, atomic file operations.

A reader must see either the old or the new file, never a partial one, and a power cut must not
lose a rename: write to a temp file in the same folder, fsync it, os.replace, fsync the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
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


class NotRegularFileError(OSError):
    """The path names a FIFO, device, socket or directory, not a regular file."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular_file(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Open `path` for reading only if it is a regular file, without ever blocking.

    The path is checked with `os.stat` before it is opened (opening some devices has effects),
    then opened with `O_NONBLOCK` (a FIFO never blocks the open) and checked again with
    `fstat` on the descriptor, which must be the same file.

    Returns:
        The open file (binary, blocking) and its `fstat` at opening.

    Raises:
        NotRegularFileError: a FIFO, device, socket or directory (`strerror` says which).
        OSError: the file cannot be opened (missing, permission denied, ...).
    """
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFileError(0, _kind(before.st_mode), str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise NotRegularFileError(0, _kind(opened.st_mode), str(path))
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise NotRegularFileError(0, "replaced while it was opened", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), opened
    except BaseException:
        os.close(fd)
        raise


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
