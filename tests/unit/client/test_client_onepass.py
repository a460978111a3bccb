"""One-pass download+verify+install: python-tuf hashes the bytes read back from the slot while
the download writes them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile

from client.errors import TooLongError
from client.onepass import Durability, StreamView, verify_while_streaming

DATA = os.urandom(1024 * 1024 + 123)
TARGET = TargetFile.from_data("firmware/m/fw-1.bin", DATA, ["sha256", "sha512"])


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for pos in range(0, len(data), size):
        yield data[pos : pos + size]


def _run(
    slot: Path,
    chunks: Iterator[bytes] | None,
    *,
    present: int = 0,
    checkpoints: list[int] | None = None,
) -> tuple[StreamView, Exception | None]:
    wfd = os.open(slot, os.O_WRONLY | os.O_CREAT, 0o600)
    rfd = os.open(slot, os.O_RDONLY)
    try:
        with Durability(
            wfd,
            durable=present,
            step=256 * 1024,
            checkpoint=None if checkpoints is None else checkpoints.append,
        ) as d:
            view = StreamView(
                TARGET, chunks, wfd, rfd, present=present, on_written=d.written, progress=None
            )
            return view, verify_while_streaming(view, TARGET)
    finally:
        os.close(wfd)
        os.close(rfd)


def test_matching_image_is_written_and_verified(tmp_path: Path) -> None:
    checkpoints: list[int] = []
    view, mismatch = _run(tmp_path / "slot", _chunks(DATA), checkpoints=checkpoints)
    assert mismatch is None and view.present == len(DATA)
    assert (tmp_path / "slot").read_bytes() == DATA
    # a checkpoint still pending when the image is complete is skipped (the install syncs it)
    assert checkpoints == sorted(checkpoints) and all(c <= len(DATA) for c in checkpoints)


def test_durability_checkpoints_synced_progress(tmp_path: Path) -> None:
    checkpoints: list[int] = []
    fd = os.open(tmp_path / "slot", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with Durability(fd, durable=0, step=10, checkpoint=checkpoints.append) as durability:
            os.write(fd, b"x" * 25)
            durability.written(25)
            deadline = time.monotonic() + 10
            while not checkpoints and time.monotonic() < deadline:
                time.sleep(0.01)
            assert checkpoints == [25] and durability.durable == 25
            durability.written(30)  # below the step: no new checkpoint
        assert checkpoints == [25] and durability.error is None
    finally:
        os.close(fd)


def test_altered_bytes_are_refused(tmp_path: Path) -> None:
    bad = bytearray(DATA)
    bad[500_000] ^= 1
    view, mismatch = _run(tmp_path / "slot", _chunks(bytes(bad)))
    assert isinstance(mismatch, LengthOrHashMismatchError)
    assert view.present == len(DATA)


def test_short_stream_is_a_mismatch_with_fewer_bytes(tmp_path: Path) -> None:
    view, mismatch = _run(tmp_path / "slot", _chunks(DATA[:700_000]))
    assert isinstance(mismatch, LengthOrHashMismatchError)
    assert view.present == 700_000


def test_more_bytes_than_the_metadata_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TooLongError, match="sent more than the 1048699 bytes"):
        _run(tmp_path / "slot", _chunks(DATA + b"x"))


def test_resumed_prefix_is_read_back_from_the_slot(tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    slot.write_bytes(DATA[:300_000])
    _view, mismatch = _run(slot, _chunks(DATA[300_000:]), present=300_000)
    assert mismatch is None and slot.read_bytes() == DATA
    tampered = bytearray(DATA[:300_000])
    tampered[7] ^= 1
    slot.write_bytes(bytes(tampered))
    _view, mismatch = _run(slot, _chunks(DATA[300_000:]), present=300_000)
    assert isinstance(mismatch, LengthOrHashMismatchError)


def test_nothing_left_to_fetch(tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    slot.write_bytes(DATA)
    _view, mismatch = _run(slot, None, present=len(DATA))
    assert mismatch is None


def test_signed_length_beyond_the_bytes_that_arrived_is_a_length_mismatch(
    tmp_path: Path,
) -> None:
    """A target lists the hash of DATA but a longer length: python-tuf sees the length of the
    bytes that arrived, not the signed length reported back to it."""
    lying = TargetFile(len(DATA) + 4096, dict(TARGET.hashes), TARGET.path)
    slot = tmp_path / "slot"
    wfd = os.open(slot, os.O_WRONLY | os.O_CREAT, 0o600)
    rfd = os.open(slot, os.O_RDONLY)
    try:
        view = StreamView(
            lying, _chunks(DATA), wfd, rfd, present=0, on_written=lambda _: None, progress=None
        )
        mismatch = verify_while_streaming(view, lying)
    finally:
        os.close(wfd)
        os.close(rfd)
    assert isinstance(mismatch, LengthOrHashMismatchError)
    assert f"Observed length {len(DATA)} does not match expected length {len(DATA) + 4096}" in str(
        mismatch
    )
    assert view.present == len(DATA) and slot.stat().st_size == len(DATA)
