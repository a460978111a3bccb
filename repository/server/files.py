"""Opening published files safely, with a small per-worker cache of small files.

Safety: a file is opened by walking its path from a directory descriptor opened once, one
component at a time with `O_NOFOLLOW` (`openat`), so no symlink, `..` or absolute path can
lead out of the tree; anything but a regular file is "not found".

Speed: system calls dominate the cost of serving a 400-byte `timestamp.json`. A file of at
most `SMALL` bytes is kept in memory after its first safe read, keyed by its path and checked on
every request with one `lstat()` against the (inode, size, mtime) it had: a new version written
by the repository (always a new inode: temp file + rename) is read again at once.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

SMALL = 64 * 1024
_CACHE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Opened:
    """A file ready to serve: its bytes (small files) or an open descriptor (others)."""

    size: int
    mtime: float
    ino: int
    mtime_ns: int
    data: bytes | None
    fd: int | None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def open_below(top: int, parts: list[str]) -> int:
    """Open `parts` below the directory descriptor `top`, following no symlink.

    Raises:
        FileNotFoundError: missing, a symlink, a directory, or anything but a regular file.
    """
    dir_fd = top
    opened: list[int] = []
    try:
        for part in parts[:-1]:
            dir_fd = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
            )
            opened.append(dir_fd)
        fd = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as e:  # ELOOP (symlink), ENOTDIR, ENOENT, EACCES: all "not here"
        raise FileNotFoundError(parts[-1]) from e
    finally:
        for d in opened:
            os.close(d)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(parts[-1])
    return fd


class FileSource:
    """The published files of one folder (`metadata/` or `targets/`), for one worker process."""

    def __init__(self, folder: str) -> None:
        self._top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cache: dict[str, tuple[tuple[int, int, int], bytes]] = {}
        self._cached_bytes = 0

    def open(self, parts: list[str]) -> Opened:
        """Raises:
        FileNotFoundError: nothing servable at `parts`.
        """
        key = "/".join(parts)
        hit = self._cache.get(key)
        if hit is not None:
            try:
                st = os.stat(key, dir_fd=self._top, follow_symlinks=False)
            except OSError:
                st = None
            if st is not None and hit[0] == (st.st_ino, st.st_size, st.st_mtime_ns):
                return Opened(st.st_size, st.st_mtime, st.st_ino, st.st_mtime_ns, hit[1], None)
        fd = open_below(self._top, parts)
        st = os.fstat(fd)
        if st.st_size > SMALL:
            return Opened(st.st_size, st.st_mtime, st.st_ino, st.st_mtime_ns, None, fd)
        try:
            data = os.pread(fd, st.st_size, 0)
        finally:
            os.close(fd)
        if len(data) == st.st_size:
            self._remember(key, (st.st_ino, st.st_size, st.st_mtime_ns), data)
        return Opened(len(data), st.st_mtime, st.st_ino, st.st_mtime_ns, data, None)

    def _remember(self, key: str, stamp: tuple[int, int, int], data: bytes) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= len(old[1])
        if self._cached_bytes + len(data) > _CACHE_BYTES:
            self._cache.clear()  # bounded memory; the next requests fill it again
            self._cached_bytes = 0
        self._cache[key] = (stamp, data)
        self._cached_bytes += len(data)
