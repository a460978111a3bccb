"""A/B slots: a regular file or a block device holding one firmware image at offset 0.

Only the first `length` bytes of a slot are the image (a partition is larger than the image);
`SlotView` exposes exactly those bytes as a read-only file, so python-tuf's
`TargetFile.verify_length_and_hashes` judges the image as installed. A file slot is trimmed to
its image when written, so one of another size is refused before a byte of it is read (a slot
stretched to a terabyte never holds the boot for hours); a block device must be at least as
large as the image.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from tuf.api import exceptions
from tuf.api.metadata import TargetFile

from client.errors import StorageError, VerificationError
from client.storage import FILE_MODE


class SlotView(io.RawIOBase):
    """Read-only view of the first `length` bytes of an open slot (seekable)."""

    def __init__(self, fd: int, length: int):
        super().__init__()
        self._fd = fd
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end()}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _end(self) -> int:
        # A file slot shorter than the image reports its real size, so the length check fails.
        size = os.lseek(self._fd, 0, os.SEEK_END)
        return min(size, self._length)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class Slot:
    """One slot of the A/B pair.

    Args:
        name: "A" or "B".
        path: A regular file (created owner-only if missing) or a block device.
    """

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path

    def __repr__(self) -> str:
        return f"Slot({self.name}, {self.path})"

    def is_block_device(self) -> bool:
        try:
            return stat.S_ISBLK(self.path.stat().st_mode)
        except FileNotFoundError:
            return False

    def open_for_write(self, offset: int) -> int:
        """Open the slot for writing at `offset`; a file slot is created owner-only.

        Raises:
            StorageError: the slot cannot be opened.
        """
        flags = os.O_WRONLY
        if not self.is_block_device():
            flags |= os.O_CREAT
        try:
            fd = os.open(self.path, flags, FILE_MODE)
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError as e:
            raise StorageError(f"cannot open slot {self.name} ({self.path}): {e.strerror}") from e
        return fd

    def open_for_read(self) -> int:
        """Raises:
        StorageError: the slot cannot be opened.
        """
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise StorageError(f"cannot read slot {self.name} ({self.path}): {e.strerror}") from e

    def finish_write(self, fd: int, length: int) -> None:
        """Trim a file slot to the image and make it durable (size included).

        Raises:
            StorageError: the write cannot be made durable.
        """
        try:
            if not self.is_block_device():
                os.ftruncate(fd, length)
            os.fsync(fd)
        except OSError as e:
            raise StorageError(f"cannot flush slot {self.name}: {e.strerror}") from e

    def capacity(self) -> int:
        """The largest image this slot can hold: a block device's size; for a file slot, its
        current size plus the space free for it on its filesystem.

        Raises:
            StorageError: the slot or its folder cannot be inspected.
        """
        try:
            if self.is_block_device():
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    return os.lseek(fd, 0, os.SEEK_END)
                finally:
                    os.close(fd)
            try:
                current = self.path.stat().st_size
            except FileNotFoundError:
                current = 0
            fs = os.statvfs(self.path.parent)
            return current + fs.f_bavail * fs.f_frsize
        except OSError as e:
            raise StorageError(
                f"cannot inspect slot {self.name} ({self.path}): {e.strerror or e}"
            ) from e

    def drop_cache(self) -> None:
        """Drop the slot's pages from the page cache so the next read comes from the medium."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def verify(self, target: TargetFile) -> None:
        """Check the image in the slot against a verified target.

        Raises:
            VerificationError: length or hashes differ, or the slot cannot be read.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise VerificationError(f"slot {self.name} cannot be read: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            size = st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(fd, 0, os.SEEK_END)
            if size < target.length or (stat.S_ISREG(st.st_mode) and size != target.length):
                raise VerificationError(
                    f"slot {self.name} holds {size} bytes, not the {target.length} of {target.path}"
                )
            with SlotView(fd, target.length) as view:
                target.verify_length_and_hashes(view)  # type: ignore[arg-type]
        except exceptions.LengthOrHashMismatchError as e:
            raise VerificationError(f"slot {self.name} does not hold {target.path}: {e}") from e
        except OSError as e:
            raise VerificationError(f"slot {self.name} cannot be read: {e.strerror}") from e
        finally:
            os.close(fd)
