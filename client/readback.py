"""Read-back verification of a slot while it is being written (download+verify+install in one
pass).

A verifier thread runs python-tuf's `TargetFile.verify_length_and_hashes` on a read-only view of
the slot's first `length` bytes. The view hands out only bytes that are already durable: when it
needs more, it `fdatasync`s what the download wrote, drops those pages from the page cache and
reads them back, so the hash is computed over the bytes as the medium returns them, while the
download goes on. The view's end is the image's verified length; if the download stops short,
the view ends early and the hash cannot match.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable

from tuf.api import exceptions
from tuf.api.metadata import TargetFile

from client.testhooks import kill_point

SYNC_BATCH = 2 * 1024 * 1024


class _Aborted(Exception):
    pass


class _View(io.RawIOBase):
    def __init__(self, owner: ReadBackVerifier):
        super().__init__()
        self._owner = owner
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._owner.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = self._owner.read_back(buffer, self._pos)
        self._pos += n
        return n


class ReadBackVerifier:
    """Verifies a slot's image by reading back durable bytes while the download writes it.

    Args:
        target: The verified target the image must match.
        write_fd: The descriptor the download writes to (synced from here).
        read_fd: A separate read-only descriptor on the slot.
        durable: Bytes at the start of the slot that are durable already (a resumed download).
        checkpoint: Called with n when the first n bytes are durable, at most every
            `checkpoint_bytes`, so an interrupted download can resume there.
    """

    def __init__(self, target: TargetFile, write_fd: int, read_fd: int, *, durable: int,
                 checkpoint: Callable[[int], None] | None = None,
                 checkpoint_bytes: int = 8 * 1024 * 1024):
        self.target = target
        self.length = target.length
        self._wfd = write_fd
        self._rfd = read_fd
        self._cond = threading.Condition()
        self._written = durable
        self._durable = durable
        self._saved = durable
        self._closed = False
        self._aborted = False
        self._checkpoint = checkpoint
        self._step = checkpoint_bytes
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="read-back", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def written(self, total: int) -> None:
        """The download has written the first `total` bytes."""
        with self._cond:
            self._written = total
            if total - self._durable >= SYNC_BATCH:
                self._cond.notify()

    def finish(self) -> Exception | None:
        """No more bytes are coming: wait for the verdict (None means the image matches)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        return self.error

    def abort(self) -> None:
        with self._cond:
            self._aborted = self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        try:
            self.target.verify_length_and_hashes(_View(self))  # type: ignore[arg-type]
        except _Aborted:
            pass
        except (exceptions.LengthOrHashMismatchError, OSError) as e:
            self.error = e

    def read_back(self, buffer: memoryview | bytearray, pos: int) -> int:
        want = min(len(buffer), self.length - pos)
        if want <= 0:
            return 0
        while pos >= self._durable:
            with self._cond:
                while not self._closed and self._written - self._durable < SYNC_BATCH:
                    self._cond.wait()
                if self._aborted:
                    raise _Aborted
                written, closed = self._written, self._closed
            if written <= self._durable:
                if closed:
                    return 0  # the download ended short: the hash will not match
                continue
            os.fdatasync(self._wfd)
            self._durable = written
            if self._checkpoint is not None and written - self._saved >= self._step:
                self._checkpoint(written)
                self._saved = written
                kill_point("download-checkpoint")
        n = min(want, self._durable - pos)
        os.posix_fadvise(self._rfd, pos, n, os.POSIX_FADV_DONTNEED)  # read from the medium
        data = os.pread(self._rfd, n, pos)
        buffer[: len(data)] = data
        return len(data)
