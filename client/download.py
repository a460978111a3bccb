"""Downloading a verified target to a file (tools and the conformance adapter).

The device itself streams into a slot (`client.update`); both go through `client.onepass`, so
python-tuf's `TargetFile.verify_length_and_hashes` judges the bytes as they are stored, and
its length check sees the bytes that actually arrived.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from tuf.api import exceptions
from tuf.api.metadata import TargetFile

from client.errors import StorageError, VerificationError
from client.onepass import StreamView, verify_while_streaming
from client.tufclient import TufClient, wrap_tuf_error

CHECKPOINT_BYTES = 8 * 1024 * 1024

Progress = Callable[[int, int], None]


def download_to_file(tuf: TufClient, target: TargetFile, dest: Path) -> None:
    """Download `target` to `dest`, verified, replacing it atomically.

    The bytes go to an unnamed file in `dest`'s folder first, so nothing partial is ever
    visible there.

    Raises:
        VerificationError: the bytes do not match the verified target (TooLongError: more
            bytes than the verified length).
        NetworkError: the transfer failed.
        StorageError: `dest` cannot be written.
    """
    try:
        with tempfile.TemporaryFile(dir=dest.parent) as tmp:
            _, chunks = tuf.open_target(target, 0)
            view = StreamView(
                target,
                chunks,
                tmp.fileno(),
                tmp.fileno(),
                present=0,
                on_written=lambda _: None,
                progress=None,
            )
            try:
                mismatch = verify_while_streaming(view, target)
            except exceptions.DownloadError as e:
                raise wrap_tuf_error(e, f"download of {target.path} failed") from e
            if mismatch is not None:
                raise VerificationError(f"refused {target.path}: {mismatch}") from mismatch
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
