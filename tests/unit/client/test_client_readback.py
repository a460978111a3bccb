"""Read-back verification while writing, and the slot view used at boot."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile

from client.errors import VerificationError
from client.readback import SYNC_BATCH, ReadBackVerifier
from client.slots import Slot

DATA = os.urandom(3 * SYNC_BATCH + 12345)


def _write(slot: Path, data: bytes, *, chunk: int = 256 * 1024,
           tamper_at: int | None = None) -> tuple[Exception | None, list[int]]:
    target = TargetFile.from_data("firmware/m/fw-1.bin", DATA, ["sha256"])
    checkpoints: list[int] = []
    wfd = os.open(slot, os.O_WRONLY | os.O_CREAT, 0o600)
    rfd = os.open(slot, os.O_RDONLY)
    try:
        verifier = ReadBackVerifier(target, wfd, rfd, durable=0, checkpoint=checkpoints.append,
                                    checkpoint_bytes=SYNC_BATCH)
        verifier.start()
        for pos in range(0, len(data), chunk):
            piece = data[pos:pos + chunk]
            if tamper_at is not None and pos <= tamper_at < pos + len(piece):
                piece = piece[: tamper_at - pos] + b"X" + piece[tamper_at - pos + 1:]
            os.write(wfd, piece)
            verifier.written(pos + len(piece))
        return verifier.finish(), checkpoints
    finally:
        os.close(wfd)
        os.close(rfd)


def test_matching_image(tmp_path: Path) -> None:
    error, checkpoints = _write(tmp_path / "slot", DATA)
    assert error is None
    assert checkpoints and checkpoints == sorted(checkpoints)
    assert all(c <= len(DATA) for c in checkpoints)


def test_short_image(tmp_path: Path) -> None:
    error, _ = _write(tmp_path / "slot", DATA[:-1])
    assert isinstance(error, LengthOrHashMismatchError)


def test_altered_byte(tmp_path: Path) -> None:
    error, _ = _write(tmp_path / "slot", DATA, tamper_at=SYNC_BATCH + 7)
    assert isinstance(error, LengthOrHashMismatchError)


def test_abort_stops_the_thread(tmp_path: Path) -> None:
    target = TargetFile.from_data("firmware/m/fw-1.bin", DATA, ["sha256"])
    wfd = os.open(tmp_path / "slot", os.O_WRONLY | os.O_CREAT, 0o600)
    rfd = os.open(tmp_path / "slot", os.O_RDONLY)
    verifier = ReadBackVerifier(target, wfd, rfd, durable=0)
    verifier.start()
    verifier.abort()
    assert verifier.error is None
    assert not [t for t in threading.enumerate() if t.name == "read-back"]
    os.close(wfd)
    os.close(rfd)


def test_slot_verify(tmp_path: Path) -> None:
    slot = Slot("A", tmp_path / "a.img")
    target = TargetFile.from_data("firmware/m/fw-1.bin", b"image bytes", ["sha256"])
    slot.path.write_bytes(b"image bytes" + b"\0" * 100)  # a partition is larger than the image
    slot.verify(target)
    slot.path.write_bytes(b"image byte")
    with pytest.raises(VerificationError, match=r"slot A does not hold .*Observed length 10"):
        slot.verify(target)
    slot.path.unlink()
    with pytest.raises(VerificationError, match="slot A cannot be read"):
        slot.verify(target)
