"""Target paths and firmware files in the published `targets/` folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, BinaryIO

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile

from repository.errors import BadInputError
from repository.fsutil import NotRegularFileError, atomic_copy_hashed, open_regular_file

# One segment: letters, digits and a few separators; never "." or ".." or empty.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*\Z")
MAX_PATH = 255
_DIGEST = re.compile(r"[0-9a-f]{64}")


def validate_target_path(path: str) -> str:
    """Return `path` if it is a safe relative target path, else raise BadInputError.

    Refused: empty, absolute, `.`/`..` or empty segments, backslashes, control or other
    characters outside a conservative set (they would be interpreted differently by URLs,
    file systems or clients).
    """
    if not path:
        raise BadInputError("target path is empty")
    if len(path) > MAX_PATH:
        raise BadInputError(f"target path longer than {MAX_PATH} characters")
    if path.startswith("/"):
        raise BadInputError(f"target path must be relative: {path!r}")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise BadInputError(f"target path has an empty, '.' or '..' segment: {path!r}")
        if not _SEGMENT.match(segment):
            raise BadInputError(f"target path has characters outside [A-Za-z0-9._+-]: {path!r}")
    return path


def open_source(source: Path) -> tuple[BinaryIO, os.stat_result]:
    """Open a file to publish: only a regular file, opened without blocking; anything else is
    one clear line.

    Raises:
        BadInputError: missing, unreadable or not a regular file.
    """
    try:
        return open_regular_file(source)
    except FileNotFoundError as e:
        raise BadInputError(f"file not found: {source}") from e
    except NotRegularFileError as e:
        raise BadInputError(f"not a regular file: {source} is {e.strerror}") from e
    except PermissionError as e:
        raise BadInputError(f"cannot read {source}: permission denied") from e
    except OSError as e:
        raise BadInputError(f"cannot read {source}: {e.strerror}") from e


def store_target_file(
    targets_dir: Path, source: Path, target_path: str, custom: dict[str, Any] | None
) -> TargetFile:
    """Copy `source` into `targets/` as `<dir>/<sha256>.<name>` and describe it.

    The copy is atomic (a temporary file renamed into place, removed on failure), and only a
    regular file is read: a FIFO or device is refused before a byte is read, so nothing blocks.

    Raises:
        BadInputError: bad target path, or the source cannot be read or is not a regular file.
    """
    validate_target_path(target_path)
    directory, _, name = target_path.rpartition("/")
    src, _ = open_source(source)
    try:
        with src:
            _, sha256, length = atomic_copy_hashed(src, targets_dir / directory, name)
    except FileNotFoundError as e:
        raise BadInputError(f"file not found: {source}") from e
    except PermissionError as e:
        raise BadInputError(f"cannot read {source}: permission denied") from e
    fields = {"custom": custom} if custom is not None else {}
    return TargetFile(length, {"sha256": sha256}, target_path, unrecognized_fields=fields)


def verify_published_file(targets_dir: Path, target: TargetFile) -> None:
    """Check that the file published for `target` is there and has its length and hashes.

    Raises:
        BadInputError: the file is missing or does not match.
    """
    try:
        with open(published_path(targets_dir, target), "rb") as f:
            target.verify_length_and_hashes(f)
    except FileNotFoundError as e:
        raise BadInputError(f"{target.path}: its file is not in targets/") from e
    except LengthOrHashMismatchError as e:
        raise BadInputError(f"{target.path}: the file in targets/ does not match") from e


def stored_digests(targets_dir: Path, target_path: str) -> set[str]:
    """The sha256 of every image stored for `target_path` in `targets/`, listed now or before.

    Consistent-snapshot copies are kept after a target is removed from its role, so they record
    which bytes a path has meant: devices may hold any of them.
    """
    directory, _, name = target_path.rpartition("/")
    folder = targets_dir / directory
    suffix = f".{name}"
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {
        entry[: -len(suffix)]
        for entry in entries
        if entry.endswith(suffix) and _DIGEST.fullmatch(entry[: -len(suffix)])
    }


def published_path(targets_dir: Path, target: TargetFile) -> Path:
    """Where the consistent-snapshot copy of `target` lives."""
    directory, _, name = target.path.rpartition("/")
    return targets_dir / directory / f"{target.hashes['sha256']}.{name}"
