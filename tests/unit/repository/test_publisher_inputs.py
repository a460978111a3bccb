"""What `ota-publish` reads (regular files only, copied once, refused when they change) and the
bounds it signs within (`repository.limits`), checked fast, without subprocesses."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import repository.publisher.inputs as inputs
import repository.targetfiles as targetfiles
from repository.errors import BadInputError
from repository.fsutil import NotRegularFileError, open_regular_file
from repository.limits import DEFAULT_MAX_SECURITY_COUNTER, Limits
from repository.publisher.inputs import copy_private, private_copies
from repository.publisher.upload import UploadError, _MultipartBody
from repository.targetfiles import store_target_file


def _special(kind: str, tmp_path: Path) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open or read would wait for ever
        return tmp_path / "fifo"
    if kind == "directory":
        (tmp_path / "dir").mkdir()
        return tmp_path / "dir"
    if kind == "link-to-fifo":
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "link").symlink_to(tmp_path / "fifo")
        return tmp_path / "link"
    return Path("/dev/zero")


SPECIAL = [("fifo", "a FIFO"), ("directory", "a directory"), ("dev-zero", "a device"),
           ("link-to-fifo", "a FIFO")]  # fmt: skip


@pytest.mark.parametrize(("kind", "what"), SPECIAL, ids=[k for k, _ in SPECIAL])
def test_open_regular_file_refuses_without_blocking(tmp_path: Path, kind: str, what: str) -> None:
    with pytest.raises(NotRegularFileError) as refused:
        open_regular_file(_special(kind, tmp_path))
    assert refused.value.strerror == what


@pytest.mark.parametrize(("kind", "what"), SPECIAL, ids=[k for k, _ in SPECIAL])
def test_copy_private_refuses_what_is_not_a_regular_file(
    tmp_path: Path, kind: str, what: str
) -> None:
    folder = tmp_path / "copies"
    folder.mkdir()
    source = _special(kind, tmp_path)
    with pytest.raises(BadInputError, match=re.escape(f"not a regular file: {source} is {what}")):
        copy_private(source, folder)
    assert list(folder.iterdir()) == []


def test_store_target_file_refuses_a_fifo(tmp_path: Path) -> None:
    """`ota-repo add-target` stores through the same function: it never blocks either."""
    with pytest.raises(BadInputError, match="is a FIFO"):
        store_target_file(tmp_path / "targets", _special("fifo", tmp_path), "firmware/m/x", None)
    assert not any(p.is_file() for p in (tmp_path / "targets").rglob("*"))


def test_copy_private_copies_the_bytes_into_an_owner_only_folder(tmp_path: Path) -> None:
    source = tmp_path / "fw.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(data)
    files = [(source, "firmware/m/fw-1.bin", {"k": 1})]
    with private_copies(files) as copies:
        ((copy, path, custom),) = copies
        assert copy != source and copy.read_bytes() == data
        assert (path, custom) == ("firmware/m/fw-1.bin", {"k": 1})
        assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(copy.stat().st_mode) & 0o077 == 0
        folder = copy.parent
    assert not folder.exists()  # removed with the block


def test_copy_private_reports_length_and_hash_of_what_it_copied(tmp_path: Path) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(b"abc" * 1000)
    copied = copy_private(source, tmp_path)
    assert copied.length == 3000
    assert copied.sha256 == hashlib.sha256(copied.path.read_bytes()).hexdigest()


class _Tampered:
    """A real file whose source is changed on disk after the first read (by someone else)."""

    def __init__(self, real: Any, path: Path, change: str) -> None:
        self._real, self._path, self._change, self._reads = real, path, change, 0

    def read(self, size: int) -> bytes:
        chunk: bytes = self._real.read(size)
        self._reads += 1
        if self._reads == 1:
            with open(self._path, "r+b") as f:
                if self._change == "grows":
                    f.seek(0, os.SEEK_END)
                    f.write(b"more")
                elif self._change == "shrinks":
                    f.truncate(10)
                else:  # rewritten in place: same size, new modification time
                    f.write(b"X")
                    os.utime(self._path, ns=(0, 1_000_000_000))
        return chunk

    def fileno(self) -> int:
        return int(self._real.fileno())

    def __enter__(self) -> _Tampered:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()


@pytest.mark.parametrize("change", ["grows", "shrinks", "rewritten"])
def test_a_file_that_changes_while_it_is_copied_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(b"0123456789" * 1000)
    folder = tmp_path / "copies"
    folder.mkdir()
    real_open = open_regular_file

    def tampering(path: Path) -> tuple[Any, os.stat_result]:
        f, st = real_open(path)
        return _Tampered(f, path, change), st

    monkeypatch.setattr(targetfiles, "open_regular_file", tampering)  # under open_source
    monkeypatch.setattr(inputs, "CHUNK", 1000)
    with pytest.raises(BadInputError, match="the file changed while it was read: try again"):
        copy_private(source, folder)
    assert list(folder.iterdir()) == []  # the partial copy is gone


def test_private_copies_leaves_nothing_when_a_later_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    good = tmp_path / "fw.bin"
    good.write_bytes(b"good")
    files = [(good, "firmware/m/a", {}), (_special("fifo", tmp_path), "firmware/m/b", {})]
    with pytest.raises(BadInputError, match="is a FIFO"), private_copies(files):
        raise AssertionError("never reached")
    assert list(temp.iterdir()) == []  # the first file's copy went with its folder


# -- the upload body ---------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_the_upload_body_never_sends_other_bytes_than_its_length_says(
    tmp_path: Path, change: str
) -> None:
    image = tmp_path / "fw.bin"
    image.write_bytes(b"x" * 100_000)
    body = _MultipartBody("b", "model-x", b"{}", {"firmware/model-x/fw.bin": image})
    declared = len(body)
    if change == "grows":
        with open(image, "ab") as f:
            f.write(b"more")
    else:
        image.write_bytes(b"x" * 10)
    sent = b""
    with pytest.raises(UploadError, match="the file changed while it was read: try again"):
        while chunk := body.read(8192):
            sent += chunk
    body.close()
    assert len(sent) <= declared


def test_the_upload_body_of_unchanged_files_has_its_declared_length(tmp_path: Path) -> None:
    image, empty = tmp_path / "fw.bin", tmp_path / "empty.bin"
    image.write_bytes(os.urandom(70_000))
    empty.write_bytes(b"")
    body = _MultipartBody("b", "r", b"{}", {"firmware/r/a": image, "firmware/r/b": empty})
    sent = b""
    while chunk := body.read(4096):
        sent += chunk
    assert len(sent) == len(body) and image.read_bytes() in sent


# -- limits ------------------------------------------------------------------------------------


def test_default_limits() -> None:
    limits = Limits.from_config({})
    assert limits == Limits(DEFAULT_MAX_SECURITY_COUNTER, 3650)
    assert limits.check_security_counter(2**31 - 1, "x") == 2**31 - 1
    with pytest.raises(BadInputError, match="above the maximum 2147483647"):
        limits.check_security_counter(2**63 - 1, "x")


@pytest.mark.parametrize(
    "value", [True, -1, 0, "5", 1.5, 2**63], ids=["bool", "negative", "zero", "str", "float", "big"]
)
def test_a_bad_counter_bound_in_the_config_is_refused(value: object) -> None:
    with pytest.raises(BadInputError, match=r"limits\.max_security_counter must be an integer"):
        Limits.from_config({"limits": {"max_security_counter": value}})


def test_unknown_or_malformed_limits_are_refused() -> None:
    with pytest.raises(BadInputError, match=r"unknown setting limits\.max_expiry"):
        Limits.from_config({"limits": {"max_expiry": 10}})
    with pytest.raises(BadInputError, match="config limits must be an object"):
        Limits.from_config({"limits": [1]})


@pytest.mark.parametrize(
    "counter", [True, -1, 1.0, "3", None], ids=["bool", "negative", "float", "str", "none"]
)
def test_a_counter_of_the_wrong_type_is_refused(counter: object) -> None:
    with pytest.raises(BadInputError, match="must be an integer >= 0"):
        Limits().check_firmware_custom({"firmware": {"security_counter": counter}}, "p")


def test_expiry_bound_tolerates_a_day_of_clock_skew_and_no_more() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    limits = Limits(max_expiry_days=10)
    limits.check_expiry(now + timedelta(days=11), now, "r v2")
    with pytest.raises(BadInputError, match="r v2 expires in 12 days, more than the maximum 10"):
        limits.check_expiry(now + timedelta(days=11, minutes=1) + timedelta(days=1), now, "r v2")
