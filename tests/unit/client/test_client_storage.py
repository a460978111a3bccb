"""Owner-only storage: loose permissions refused, atomic private writes, the lock."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from client.errors import InsecureStorageError, LockedError, StorageError
from client.storage import (
    atomic_write,
    check_private_file,
    check_private_tree,
    ensure_private_dir,
    exclusive_lock,
    read_checked,
    read_json,
    write_checked,
    write_json,
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    ensure_private_dir(d)
    (d / "sub").mkdir(mode=0o700)
    write_json(d / "sub" / "state.json", {"a": 1})
    return d


def test_private_tree_passes(data: Path) -> None:
    check_private_tree(data)
    assert (data / "sub" / "state.json").stat().st_mode & 0o777 == 0o600
    assert read_json(data / "sub" / "state.json") == {"a": 1}


@pytest.mark.parametrize(
    ("rel", "mode"),
    [(".", 0o755), ("sub", 0o750), ("sub/state.json", 0o640), ("sub/state.json", 0o602)],
    ids=["dir-world", "subdir-group", "file-group", "file-world-write"],
)
def test_loose_modes_refused(data: Path, rel: str, mode: int) -> None:
    (data / rel).chmod(mode)
    with pytest.raises(InsecureStorageError, match=f"has mode {mode:04o}"):
        check_private_tree(data)


@pytest.mark.parametrize(
    ("rel", "mode", "fix"),
    [(".", 0o755, "0700"), ("sub", 0o770, "0700"), ("sub/state.json", 0o644, "0600")],
    ids=["data-dir", "subdir", "file"],
)
def test_loose_mode_error_says_how_to_fix_it(data: Path, rel: str, mode: int, fix: str) -> None:
    path = data / rel if rel != "." else data
    path.chmod(mode)
    with pytest.raises(InsecureStorageError) as e:
        check_private_tree(data)
    assert str(e.value) == (
        f"{path} has mode {mode:04o}: must be owner-only: run `chmod {fix} {path}` "
        f"(or `chmod -R go-rwx {data}` for the whole data directory)"
    )
    # and the commands it names do fix it
    path.chmod(int(fix, 8))
    check_private_tree(data)
    (data / "sub" / "state.json").chmod(0o666)
    subprocess.run(["chmod", "-R", "go-rwx", str(data)], check=True)  # the documented fix
    check_private_tree(data)


def test_link_out_of_the_tree_refused(data: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("x")
    (data / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InsecureStorageError, match="link out of the data directory"):
        check_private_tree(data)


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        check_private_tree(tmp_path / "none")


def test_secret_file_modes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    token.chmod(0o400)
    check_private_file(token, "token file")
    token.chmod(0o644)
    with pytest.raises(InsecureStorageError, match=r"token file .* has mode 0644"):
        check_private_file(token, "token file")


def test_atomic_write_replaces_and_leaves_no_temp(data: Path) -> None:
    target = data / "x.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in data.iterdir()) == ["sub", "x.bin"]


def test_bad_json_is_an_error(data: Path) -> None:
    (data / "bad.json").write_text("{")
    os.chmod(data / "bad.json", 0o600)
    with pytest.raises(StorageError, match="is not valid JSON"):
        read_json(data / "bad.json")


def test_lock_is_exclusive(data: Path) -> None:
    with exclusive_lock(data / "lock"), pytest.raises(LockedError), exclusive_lock(data / "lock"):
        pass
    with exclusive_lock(data / "lock"):
        pass


def _valid(value: object) -> dict[str, int]:
    if not isinstance(value, dict) or not isinstance(value.get("n"), int):
        raise ValueError("bad")
    return value


@pytest.mark.parametrize(
    "damage",
    [b"", b"{", b'{"sha256": "0", "state": {"n": 1}}', b'{"n": 7}'],
    ids=["empty", "torn", "bad-checksum", "unchecked"],
)
def test_checked_state_survives_one_damaged_copy(data: Path, damage: bytes) -> None:
    path = data / "s.json"
    write_checked(path, {"n": 5})
    path.write_bytes(damage)
    assert read_checked(path, {"n": 0}, _valid) == {"n": 5}  # from the backup
    write_checked(path, {"n": 6})
    (data / "s.json.bak").write_bytes(damage)
    assert read_checked(path, {"n": 0}, _valid) == {"n": 6}
    path.write_bytes(damage)
    with pytest.raises(StorageError, match="is damaged and has no intact copy"):
        read_checked(path, {"n": 0}, _valid)


def test_checked_state_default_and_validation(data: Path) -> None:
    assert read_checked(data / "none.json", {"n": 0}, _valid) == {"n": 0}
    write_checked(data / "v.json", {"n": "x"})
    with pytest.raises(StorageError):
        read_checked(data / "v.json", {"n": 0}, _valid)


def test_read_limited_reads_only_bounded_regular_files(tmp_path: Path) -> None:
    """A FIFO is refused without blocking, /dev/zero and a directory before a byte is read, and
    a file larger than the limit is refused."""
    import os

    from client.errors import ConfigError
    from client.storage import check_regular_file, read_limited

    good = tmp_path / "good"
    good.write_bytes(b"x" * 100)
    assert read_limited(good, "trusted_root", 100) == b"x" * 100
    check_regular_file(good, "server.ca_bundle", 100)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, limit, why in [
        (fifo, 100, "is not a regular file"),
        (Path("/dev/zero"), 100, "is not a regular file"),
        (tmp_path, 100, "is not a regular file"),
        (good, 99, "is larger than 99 bytes"),
    ]:
        with pytest.raises(ConfigError, match=f"trusted_root {path} {why}"):
            read_limited(path, "trusted_root", limit)
        with pytest.raises(ConfigError, match=f"server.ca_bundle {path} {why}"):
            check_regular_file(path, "server.ca_bundle", limit)
    with pytest.raises(FileNotFoundError):
        read_limited(tmp_path / "none", "trusted_root", 100)
    with pytest.raises(ConfigError, match="does not exist"):
        check_regular_file(tmp_path / "none", "server.ca_bundle", 100)
