"""The files `ota-publish add` is given: regular files only, copied once, then used as copied.

A build output may still be written, or swapped, while it is published. So every image and
delta is first copied into a private temporary folder; what is hashed, signed, stored or
uploaded afterwards is that copy, never the original again. The copy is refused when the source
is not a regular file (a FIFO, `/dev/zero`, a directory, a device: refused before anything is
read, so nothing blocks) or when it changed while it was read (its size or modification time
differ before and after, or more bytes came than its size said).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repository.errors import BadInputError
from repository.fsutil import CHUNK
from repository.targetfiles import open_source


@dataclass(frozen=True)
class Copied:
    """A private copy of a source file: where it is, and the length and SHA-256 read."""

    source: Path
    path: Path
    length: int
    sha256: str


def copy_private(source: Path, folder: Path) -> Copied:
    """Copy the regular file `source` into `folder` (which only this user can read).

    Raises:
        BadInputError: missing, unreadable, not a regular file, or changed while it was read.
    """
    src, before = open_source(source)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="copy-", suffix=f"-{source.name[-64:]}")
    digest = hashlib.sha256()
    length = 0
    try:
        with src, os.fdopen(fd, "wb") as dst:
            # read at most one byte more than the size at opening: a growing file is noticed
            # at once, and is never read for ever
            while length <= before.st_size and (chunk := src.read(CHUNK)):
                digest.update(chunk)
                length += len(chunk)
                dst.write(chunk)
            after = os.fstat(src.fileno())
    except OSError as e:
        os.unlink(tmp)
        raise BadInputError(f"cannot read {source}: {e.strerror}") from e
    except BaseException:
        os.unlink(tmp)
        raise
    if (
        length != before.st_size
        or after.st_size != before.st_size
        or after.st_mtime_ns != before.st_mtime_ns
    ):
        os.unlink(tmp)
        raise BadInputError(f"{source}: the file changed while it was read: try again")
    return Copied(source, Path(tmp), length, digest.hexdigest())


@contextlib.contextmanager
def private_copies(
    files: list[tuple[Path, str, dict[str, Any]]],
) -> Iterator[list[tuple[Path, str, dict[str, Any]]]]:
    """`files` (local file, target path, custom) with each local file replaced by a private
    copy, removed when the block ends.

    Raises:
        BadInputError: as `copy_private`, for the first file that cannot be used.
    """
    with tempfile.TemporaryDirectory(prefix="ota-publish-") as folder:
        os.chmod(folder, 0o700)
        yield [
            (copy_private(local, Path(folder)).path, path, custom) for local, path, custom in files
        ]
