"""Reading the files a user names by path: small, regular, and private where they hold secrets.

Passphrase and PIN files, private key files, `.pub` files, trusted roots and configuration are
read only if they are regular files (a FIFO never blocks, a device such as `/dev/zero` is never
read) and at most a few times larger than any honest one. A secret that group or others can read
is refused with the exact `chmod` that fixes it, as the device refuses its own loose files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from repository.errors import BadInputError
from repository.fsutil import NotRegularFileError, open_regular_file

# Byte limits, each far above any honest file of its kind.
SECRET_LIMIT = 4096  # a passphrase or PIN
KEY_FILE_LIMIT = 64 * 1024  # a PEM private key, a TUF public key JSON
ROOT_LIMIT = 512_000  # ngclient's own limit for a root (UpdaterConfig.root_max_length)
CONFIG_LIMIT = 16 * 1024 * 1024  # a repository config or token registry


class UnsafeFileError(BadInputError):
    """A file named by the user is not a regular file, is too large, or holds a secret that
    others can read."""


def read_limited(path: Path, *, what: str, limit: int, private: bool = False) -> bytes:
    """Return the bytes of `path`, a regular file of at most `limit` bytes.

    Args:
        what: names the file in the error ("passphrase file", "trusted root", ...).
        limit: the largest size accepted.
        private: refuse the file if group or others may read or write it (secrets).

    Raises:
        UnsafeFileError: not a regular file, larger than `limit`, or (with `private`) loose.
        FileNotFoundError, OSError: the file cannot be opened (callers word these themselves).
    """
    try:
        f, st = open_regular_file(path)
    except NotRegularFileError as e:
        raise UnsafeFileError(f"{what} {path} is not a regular file ({e.strerror})") from e
    with f:
        if private:
            check_private_file(path, st, what)
        if st.st_size > limit:
            raise UnsafeFileError(f"{what} {path} is larger than {limit} bytes")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFileError(f"{what} {path} is larger than {limit} bytes")
    return data


def check_private_file(path: Path, st: os.stat_result, what: str) -> None:
    """Raises UnsafeFileError if group or others may read or write the file `st` describes."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise UnsafeFileError(
            f"{what} {path} has mode {mode:04o}, readable or writable by others: "
            f"run `chmod 600 {path}` (and consider the secret exposed)"
        )


def check_private_dir(path: Path, what: str = "private folder") -> None:
    """Refuse a folder holding secrets that group or others may enter, list or write.

    A missing folder is not checked (the caller reports a missing repository its own way).

    Raises:
        UnsafeFileError: the folder is open to others.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise UnsafeFileError(f"cannot inspect {what} {path}: {e.strerror}") from e
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode) and mode & 0o077:
        raise UnsafeFileError(
            f"{what} {path} has mode {mode:04o}, open to others: run `chmod 700 {path}`"
        )
