"""Owner-only storage in the data directory: permission checks, atomic writes, the lock.

Everything the client trusts on the device lives below one data directory that only the
device user can read or write (0700 directories, 0600 files). The client refuses to run when
anything there is looser, or owned by someone else: a file another user can write is not state
the device can trust.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from client.errors import ConfigError, InsecureStorageError, LockedError, StorageError

logger = logging.getLogger(__name__)
T = TypeVar("T")

DIR_MODE = 0o700
FILE_MODE = 0o600


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file in the same folder, fsync, rename, fsync folder.

    Raises:
        StorageError: the file cannot be written.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e


def write_json(path: Path, value: Any) -> None:
    """Atomically write `value` as JSON.

    Raises:
        StorageError: the file cannot be written.
    """
    atomic_write(path, json.dumps(value, indent=1, sort_keys=True).encode() + b"\n")


def _backup(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_checked(path: Path, value: Any) -> None:
    """Write device state with a checksum, twice (`path`, then `path.bak`), each atomically:
    like a bootloader's redundant environment, one damaged copy never loses the state.

    Raises:
        StorageError: a copy cannot be written.
    """
    doc = {"sha256": hashlib.sha256(_canonical(value)).hexdigest(), "state": value}
    data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
    atomic_write(path, data)
    atomic_write(_backup(path), data)


def _read_copy(path: Path) -> Any:
    doc = json.loads(path.read_bytes())
    if not isinstance(doc, dict) or set(doc) != {"sha256", "state"}:
        raise ValueError("not a checked state document")
    if hashlib.sha256(_canonical(doc["state"])).hexdigest() != doc["sha256"]:
        raise ValueError("checksum mismatch")
    return doc["state"]


def read_checked(path: Path, default: Any, validate: Callable[[Any], T]) -> T:
    """Read state written by `write_checked`: the first copy that parses, matches its checksum
    and passes `validate` wins; neither copy existing gives `validate(default)`.

    Raises:
        StorageError: a copy exists but none is intact.
    """
    problems = []
    for copy in (path, _backup(path)):
        try:
            value = validate(_read_copy(copy))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, TypeError, KeyError, AttributeError, StorageError) as e:
            problems.append(f"{copy.name}: {e}")
            continue
        if problems:
            logger.warning("damaged state, using the intact copy: %s", "; ".join(problems))
        return value
    if problems:
        raise StorageError(f"{path} is damaged and has no intact copy ({'; '.join(problems)})")
    return validate(default)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON state file, or `default` if it does not exist.

    Raises:
        StorageError: the file exists but cannot be read or parsed.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return default
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return json.loads(data)
    except ValueError as e:
        raise StorageError(f"{path} is not valid JSON: {e}") from e


def _check_entry(path: Path, st: os.stat_result, root: Path) -> None:
    if st.st_uid != os.geteuid():
        raise InsecureStorageError(
            f"{path} is owned by uid {st.st_uid}, not by this user: "
            f"run `chown {os.geteuid()} {path}` as root"
        )
    if stat.S_ISLNK(st.st_mode):
        target = path.resolve()
        if not target.is_relative_to(root):
            raise InsecureStorageError(f"{path} is a link out of the data directory")
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        wanted = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
        raise InsecureStorageError(
            f"{path} has mode {mode:04o}: must be owner-only: run `chmod {wanted:04o} {path}` "
            f"(or `chmod -R go-rwx {root}` for the whole data directory)"
        )


def check_private_tree(root: Path) -> None:
    """Refuse a data directory that anyone but its owner can read or write.

    Raises:
        InsecureStorageError: the directory or an entry below it is too open or foreign.
        StorageError: the directory cannot be inspected.
    """
    try:
        _check_entry(root, root.lstat(), root)
        if not root.is_dir():
            raise StorageError(f"data directory {root} is not a directory")
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                _check_entry(path, path.lstat(), root)
    except FileNotFoundError as e:
        raise StorageError(f"data directory {root} does not exist") from e
    except OSError as e:
        raise StorageError(f"cannot inspect {root}: {e.strerror or e}") from e


def _open_regular(path: Path, what: str, limit: int) -> tuple[int, int]:
    """Open `path` for reading if it is a regular file of at most `limit` bytes; returns the
    descriptor and the size. A FIFO is opened without blocking (so it never hangs) and refused;
    a device such as /dev/zero, a directory or a socket is refused before a byte is read.

    Raises:
        FileNotFoundError: it does not exist.
        ConfigError: it is not a regular file, or larger than `limit`.
        StorageError: it cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if st.st_size > limit:
            raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_limited(path: Path, what: str, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (a file that grows past
    the limit while read is refused too).

    Raises:
        FileNotFoundError: it does not exist.
        ConfigError: it is not a regular file, or larger than `limit`.
        StorageError: it cannot be read.
    """
    fd, _ = _open_regular(path, what, limit)
    try:
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise StorageError(f"cannot read {what} {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    if total > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return b"".join(chunks)


def check_regular_file(path: Path, what: str, limit: int) -> None:
    """Refuse a file another library will read (a CA bundle, a certificate) unless it is a
    regular file of at most `limit` bytes, so that library never blocks on a FIFO or reads a
    device without end.

    Raises:
        ConfigError: it is missing, not a regular file, or larger than `limit`.
        StorageError: it cannot be opened.
    """
    try:
        fd, _ = _open_regular(path, what, limit)
    except FileNotFoundError as e:
        raise ConfigError(f"{what} {path} does not exist") from e
    os.close(fd)


def check_private_file(path: Path, what: str) -> None:
    """Refuse a secret file (token, private key) that others can read.

    Raises:
        InsecureStorageError: the file is readable or writable by group or others.
        StorageError: the file does not exist.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise StorageError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise InsecureStorageError(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: must be 0600 or 0400"
        )


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) owner-only if missing; never loosen or fix an existing one.

    Raises:
        StorageError: it cannot be created.
    """
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror or e}") from e


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold the data directory lock: one client process at a time changes device state.

    Raises:
        LockedError: another process holds it.
        StorageError: the lock file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as e:
        raise StorageError(f"cannot open lock {path}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise LockedError("another ota-client process is working on this device") from e
            raise StorageError(f"cannot lock {path}: {e.strerror or e}") from e
        yield
    finally:
        os.close(fd)
