"""Download, verify and install: the network is read once, straight into the slot.

python-tuf's `TargetFile.verify_length_and_hashes` reads a file object; `StreamView` is that
file object, and it only ever reports what is really in the slot. python-tuf first asks for the
length (seek to the end): the view then takes every byte the server sends, writes it into the
slot, and answers with the number of bytes that actually arrived, so a signed length that is not
the image's fails python-tuf's length check. If the server sends more than the signed length,
the transfer is cut off and refused there. The hash python-tuf then computes reads the bytes
*back from the slot*, so it covers them as they are stored, while they are still in the page
cache (no temporary copy, no second download). Bytes already in the slot from an interrupted
download are part of the view from the start.

A small thread makes the written bytes durable (`fdatasync`) and checkpoints the resume record
while the download goes on.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator

from tuf.api import exceptions
from tuf.api.metadata import TargetFile

from client.errors import TooLongError
from client.testhooks import kill_point


class Durability:
    """Makes the first n written bytes durable every `step` bytes and reports n to
    `checkpoint`, from a thread (fdatasync releases the GIL)."""

    def __init__(
        self, fd: int, *, durable: int, step: int, checkpoint: Callable[[int], None] | None
    ):
        self._fd = fd
        self._cond = threading.Condition()
        self._written = durable
        self._durable = durable
        self._step = step
        self._checkpoint = checkpoint
        self._closed = False
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="durability", daemon=True)

    def __enter__(self) -> Durability:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    @property
    def durable(self) -> int:
        return self._durable

    def written(self, total: int) -> None:
        with self._cond:
            self._written = total
            if total - self._durable >= self._step:
                self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and self._written - self._durable < self._step:
                        self._cond.wait()
                    if self._closed:
                        return
                    written = self._written
                os.fdatasync(self._fd)
                self._durable = written
                if self._checkpoint is not None:
                    self._checkpoint(written)
                kill_point("download-checkpoint")
        except Exception as e:  # noqa: BLE001 - reported to the installer, which raises it
            self.error = e


class StreamView(io.RawIOBase):
    """The bytes in the slot as a file that fills itself from the network, never longer than
    the signed length (a byte more raises `TooLongError`), and as long as what arrived."""

    def __init__(
        self,
        target: TargetFile,
        chunks: Iterator[bytes] | None,
        write_fd: int,
        read_fd: int,
        *,
        present: int,
        on_written: Callable[[int], None],
        progress: Callable[[int, int], None] | None,
    ):
        super().__init__()
        self._target = target
        self._length = target.length
        self._chunks = chunks
        self._wfd = write_fd
        self._rfd = read_fd
        self.present = present  # bytes [0, present) are in the slot
        self._pos = 0
        self._on_written = on_written
        self._progress = progress
        self._half = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self.drain()
            base = self.present  # the bytes that arrived, never the signed length
        else:
            base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def drain(self) -> None:
        """Take the rest of the stream into the slot.

        Raises:
            TooLongError: the server sent more than the verified length.
            exceptions.DownloadError, Interrupted: the transfer stopped.
        """
        while self.pull():
            pass

    def tell(self) -> int:
        return self._pos

    def pull(self) -> bool:
        """Write the next network chunk into the slot; False when the stream has ended."""
        if self._chunks is None:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            self._chunks = None
            return False
        if self.present + len(chunk) > self._length:
            raise TooLongError(
                f"refused {self._target.path}: the server sent more than the {self._length} "
                "bytes the verified metadata lists"
            )
        view = memoryview(chunk)
        while view:
            done = os.pwrite(self._wfd, view, self.present)
            self.present += done
            view = view[done:]
        self._on_written(self.present)
        if self._progress is not None:
            self._progress(self.present, self._length)
        if not self._half and self.present * 2 >= self._length:
            self._half = True
            kill_point("download-mid")
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buffer), self._length - self._pos)  # bounded by pull to `present` too
        if want <= 0:
            return 0
        while self._pos >= self.present:
            if not self.pull():
                return 0  # ended short: the hash will not match
        n = os.preadv(
            self._rfd, [memoryview(buffer)[: min(want, self.present - self._pos)]], self._pos
        )
        self._pos += n
        return n


def verify_while_streaming(view: StreamView, target: TargetFile) -> Exception | None:
    """Run python-tuf's verification over `view` (which downloads when python-tuf asks for its
    length), then make sure the server has nothing more to send.

    Returns:
        None if the slot holds exactly the verified image (`view.present == target.length`),
        else python-tuf's mismatch error (`view.present < target.length` then means the
        transfer ended short of the signed length).

    Raises:
        TooLongError: the server sent more than the verified length.
        exceptions.DownloadError, Interrupted: the transfer stopped (`view.present` bytes are in
            the slot).
    """
    try:
        target.verify_length_and_hashes(view)  # type: ignore[arg-type]
    except exceptions.LengthOrHashMismatchError as e:
        mismatch: Exception | None = e
    else:
        mismatch = None
    view.drain()  # a byte past the verified length raises TooLongError
    return mismatch
