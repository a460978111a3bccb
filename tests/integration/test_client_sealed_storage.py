"""Encryption at rest with a device key, through real `ota-client` processes: the resume record
of an interrupted download is sealed (not plaintext) and still resumes; a tampered record, or one
sealed with another key, is refused in one line with the device unchanged and the next update
starts over; a loose, missing or malformed key file is refused; the update boots and commits."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.sealed import DeviceKey
from tests.helpers.ota_device import PASSPHRASE, DeviceHandle, Lab, sha256
from tests.helpers.repo import assert_one_line_error

MIB = 1024 * 1024


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


def _key_file(lab: Lab) -> Path:
    path = lab.folder / "keys" / "device.key"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


def _interrupted(lab: Lab) -> tuple[DeviceHandle, Path, str]:
    """A device with a device key whose download of 2.0.0 stopped after 1 MiB."""
    key = _key_file(lab)
    v1 = lab.publish("1.0.0", counter=1)
    v2 = lab.publish("2.0.0", counter=1, size=2 * MIB)
    dev = lab.device(factory=v1, extra=f'[storage]\ndevice_key_file = "{key}"\n')
    lab.server.set_faults({"cut_after": {v2.rpartition("/")[2]: MIB}})
    assert_one_line_error(dev.run("update"), f"download of {v2} failed (it will resume)")
    lab.server.set_faults({})
    lab.server.reset_log()
    return dev, key, v2


def _boots(dev: DeviceHandle, lab: Lab, target: str) -> None:
    booted = dev.json("boot")
    assert booted["committed"] and booted["version"] == "2.0.0"
    assert sha256(dev.active_bytes()) == sha256(lab.published[target])


def test_sealed_resume_record_is_not_plaintext_and_resumes(lab: Lab) -> None:
    dev, key, v2 = _interrupted(lab)
    sealed = dev.data_dir / "download.sealed"
    assert not (dev.data_dir / "download.json").exists()
    blob = sealed.read_bytes()
    for plain in (v2.encode(), b"offset", b"sha256", lab.published[v2][:32]):
        assert plain not in blob
    record = json.loads(DeviceKey(key.read_bytes()).open(blob, purpose="download", name="r"))
    assert record["path"] == v2 and record["offset"] > 0
    assert dev.json("update")["version"] == "2.0.0"
    ranged = [r for r in lab.server.requests() if r["range"]]
    assert ranged and ranged[0]["status"] == 206  # it resumed from the sealed record
    assert not sealed.exists()
    _boots(dev, lab, v2)
    assert dev.run("log", "verify").returncode == 0


def _flip_last_byte(sealed: Path, key: Path) -> None:
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 0x01
    sealed.write_bytes(bytes(data))


def _other_key(sealed: Path, key: Path) -> None:
    key.write_bytes(os.urandom(32))


@pytest.mark.parametrize("change", [_flip_last_byte, _other_key], ids=["tampered", "other-key"])
def test_record_that_does_not_decrypt_is_refused(
    lab: Lab, change: Callable[[Path, Path], None]
) -> None:
    dev, key, v2 = _interrupted(lab)
    sealed = dev.data_dir / "download.sealed"
    dev.json("check")
    before = dev.snapshot()
    state = (dev.data_dir / "state.json").read_bytes()
    change(sealed, key)
    proc = dev.run("update")
    assert_one_line_error(proc, f"refused {sealed}: it does not decrypt with the device key")
    assert proc.stderr.startswith("ota-client: error: ")
    assert dev.snapshot() == before
    assert (dev.data_dir / "state.json").read_bytes() == state
    assert not sealed.exists()  # never resumed from: the next attempt starts over
    assert not [r for r in lab.server.requests() if "/targets/" in r["path"]]
    failed = [e for e in dev.events() if e["event"] == "download"][-1]
    assert failed["result"] == "failed" and "does not decrypt" in failed["reason"]
    assert dev.json("update")["version"] == "2.0.0"
    assert not [r for r in lab.server.requests() if r["range"]]
    _boots(dev, lab, v2)


def _loose(key: Path) -> None:
    key.chmod(0o644)


def _missing(key: Path) -> None:
    key.unlink()


def _short(key: Path) -> None:
    key.write_bytes(os.urandom(16))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_loose, "has mode 0644: must be 0600 or 0400"),
        (_missing, "cannot read device key file"),
        (_short, "must hold exactly 32 bytes, not 16"),
    ],
    ids=["loose", "missing", "short"],
)
def test_bad_key_file_is_refused(lab: Lab, change: Callable[[Path], None], message: str) -> None:
    key = _key_file(lab)
    v1 = lab.publish("1.0.0", counter=1)
    lab.publish("2.0.0", counter=1)
    dev = lab.device(factory=v1, extra=f'[storage]\ndevice_key_file = "{key}"\n')
    dev.json("check")
    before = dev.snapshot()
    good = key.read_bytes()
    change(key)
    proc = dev.run("update")
    assert_one_line_error(proc, "device key file", str(key), message)
    key.write_bytes(good)
    key.chmod(0o600)
    assert dev.snapshot() == before
    assert dev.json("update")["version"] == "2.0.0"
