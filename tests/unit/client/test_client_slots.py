"""The slot check: a file slot is judged only when its size is the recorded image's length, and
no check reads more than that length."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

import client.slots
from client.errors import VerificationError
from client.slots import Slot

DATA = os.urandom(300_000)
TARGET = TargetFile.from_data("firmware/m/fw-1.bin", DATA, ["sha256"])


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each `os.pread` of the slot module returned."""
    counted: list[int] = []
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real(fd, n, offset)
        counted.append(len(data))
        return data

    monkeypatch.setattr(client.slots.os, "pread", pread)
    return counted


def test_matching_file_slot_is_read_once_up_to_the_length(tmp_path: Path, reads: list[int]) -> None:
    path = tmp_path / "slot"
    path.write_bytes(DATA)
    Slot("A", path).verify(TARGET)
    assert sum(reads) == len(DATA)


@pytest.mark.parametrize(
    "size", [len(DATA) - 1, len(DATA) + 1, 2**40], ids=["shorter", "longer", "sparse-1TiB"]
)
def test_file_slot_of_another_size_is_refused_unread(
    tmp_path: Path, reads: list[int], size: int
) -> None:
    path = tmp_path / "slot"
    path.write_bytes(DATA)
    os.truncate(path, size)
    with pytest.raises(
        VerificationError, match=f"slot A holds {size} bytes, not the {len(DATA)} of"
    ):
        Slot("A", path).verify(TARGET)
    assert reads == []


def test_missing_slot_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="slot B cannot be read"):
        Slot("B", tmp_path / "none").verify(TARGET)


def test_capacity_of_a_file_slot_is_its_size_plus_the_free_space(tmp_path: Path) -> None:
    path = tmp_path / "slot"
    path.write_bytes(DATA)
    capacity = Slot("A", path).capacity()
    free = os.statvfs(tmp_path)
    assert capacity >= len(DATA)
    assert capacity <= len(DATA) + free.f_bavail * free.f_frsize + 64 * 1024 * 1024
    assert Slot("B", tmp_path / "new").capacity() > 0
