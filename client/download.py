"""Streaming a verified target's bytes into a file descriptor, resumable with HTTP Range.

The bytes are written where they will be used (the inactive slot), so a download and an install
are one pass over the network data; python-tuf's `TargetFile.verify_length_and_hashes` judges
them afterwards, read back from where they landed. This module only moves bytes and bounds them:
a server sending more than the verified length is cut off and refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from tuf.api import exceptions
from tuf.api.metadata import TargetFile

from client.errors import NetworkError, StorageError, UpdateError, VerificationError
from client.testhooks import kill_point
from client.tufclient import TufClient, wrap_tuf_error

CHECKPOINT_BYTES = 8 * 1024 * 1024

Progress = Callable[[int, int], None]


class TooLongError(VerificationError):
    """The server sent more bytes than the verified target's length."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def stream_target(
    tuf: TufClient,
    target: TargetFile,
    fd: int,
    *,
    offset: int = 0,
    progress: Progress | None = None,
    on_written: Callable[[int], None] | None = None,
) -> int:
    """Write `target`'s bytes into `fd` (positioned at `offset`), resuming from `offset`.

    `on_written(n)` is called whenever the first n bytes have been written.

    Returns:
        The number of bytes now written (the target's length on success).

    Raises:
        TooLongError: the server sent more bytes than the verified length.
        NetworkError: the transfer failed or ended early (resumable).
        Interrupted: a stop was requested (resumable).
        StorageError: the destination cannot be written.
    """
    length = target.length
    offset = max(0, min(offset, length))
    if offset == length:
        return length  # every byte is there already (cut after the last checkpoint)
    start, chunks = tuf.open_target(target, offset)
    written = start
    if start != offset:
        os.lseek(fd, start, os.SEEK_SET)
    half_done = False
    try:
        for chunk in chunks:
            if written + len(chunk) > length:
                raise TooLongError(
                    f"refused {target.path}: the server sent more than the {length} bytes "
                    "the verified metadata lists"
                )
            _write_all(fd, chunk)
            written += len(chunk)
            if on_written is not None:
                on_written(written)
            if progress is not None:
                progress(written, length)
            if not half_done and written * 2 >= length:
                half_done = True
                kill_point("download-mid")
    except exceptions.DownloadError as e:
        raise PartialDownload(written, wrap_tuf_error(
            e, f"download of {target.path} failed (it will resume)")) from e
    except OSError as e:
        raise StorageError(f"cannot write {target.path}: {e.strerror or e}") from e
    except UpdateError as e:
        if isinstance(e, TooLongError):
            raise
        raise PartialDownload(written, e) from e
    if written < length:
        raise PartialDownload(written, NetworkError(
            f"download of {target.path} ended early at {written} of {length} bytes "
            "(it will resume)"
        ))
    return written


class PartialDownload(UpdateError):
    """A download stopped after `written` bytes; `error` says why (raise it to the caller)."""

    def __init__(self, written: int, error: Exception):
        super().__init__(str(error))
        self.written = written
        self.error = error


def download_to_file(tuf: TufClient, target: TargetFile, dest: Path) -> None:
    """Download `target` to `dest`, verified, replacing it atomically (tools and the
    conformance adapter; the device streams into a slot instead).

    The bytes go to an unnamed file in `dest`'s folder first, so nothing partial is ever
    visible there.

    Raises:
        VerificationError: the bytes do not match the verified target.
        NetworkError, StorageError: as for `stream_target`.
    """
    try:
        with tempfile.TemporaryFile(dir=dest.parent) as tmp:
            try:
                stream_target(tuf, target, tmp.fileno())
            except PartialDownload as e:
                raise e.error from e
            tmp.seek(0)
            try:
                target.verify_length_and_hashes(tmp)
            except exceptions.LengthOrHashMismatchError as e:
                raise VerificationError(f"refused {target.path}: {e}") from e
            tmp.seek(0)
            fd, name = tempfile.mkstemp(dir=dest.parent, prefix=".", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := tmp.read(1024 * 1024):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(name, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
                raise
    except OSError as e:
        raise StorageError(f"cannot write {dest}: {e.strerror or e}") from e
