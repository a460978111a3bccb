"""Encryption at rest with the device key: sealed files round-trip, are not plaintext, and any
change (or another key, or another kind of file) is refused; the key file is checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from client.config import load_config
from client.errors import ConfigError, InsecureStorageError, StorageError, TamperedError
from client.sealed import CHUNK, KEY_BYTES, DeviceKey, load_device_key
from client.state import StateStore
from client.storage import ensure_private_dir

KEY = DeviceKey(bytes(range(KEY_BYTES)))
OTHER = DeviceKey(bytes(KEY_BYTES))
RECORD = {"slot": "B", "path": "firmware/model-x/fw-2.0.0.bin", "offset": 1048576}
HEADER = 24  # magic + file id
RECORD_BYTES = 12 + CHUNK + 16  # nonce + full chunk + tag


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7],
    ids=["empty", "one", "chunk-1", "chunk", "chunk+1", "three-chunks"],
)
def test_round_trip_and_not_plaintext(size: int) -> None:
    data = (b"firmware resume record " * (size // 23 + 1))[:size]
    blob = KEY.seal(data, purpose="download")
    assert KEY.open(blob, purpose="download", name="f") == data
    if size >= 16:
        assert data[:16] not in blob
    assert KEY.seal(data, purpose="download") != blob  # fresh file id and nonces


def _flip(at: int) -> Callable[[bytes], bytes]:
    def change(blob: bytes) -> bytes:
        out = bytearray(blob)
        out[at] ^= 0x01
        return bytes(out)

    return change


def _swap_first_two_chunks(blob: bytes) -> bytes:
    first = blob[HEADER : HEADER + RECORD_BYTES]
    second = blob[HEADER + RECORD_BYTES : HEADER + 2 * RECORD_BYTES]
    return blob[:HEADER] + second + first + blob[HEADER + 2 * RECORD_BYTES :]


def _splice_from_another_file(blob: bytes) -> bytes:
    other = KEY.seal(bytes(3 * CHUNK), purpose="download")
    return blob[:HEADER] + other[HEADER : HEADER + RECORD_BYTES] + blob[HEADER + RECORD_BYTES :]


TAMPERINGS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("magic", _flip(0)),
    ("file-id", _flip(10)),
    ("nonce", _flip(HEADER)),
    ("ciphertext", _flip(HEADER + 12 + 5)),
    ("tag", _flip(-1)),
    ("truncated-at-chunk-boundary", lambda b: b[: HEADER + 2 * RECORD_BYTES]),
    ("truncated-mid-chunk", lambda b: b[:-100]),
    ("cut-to-a-stub", lambda b: b[: HEADER + 20]),
    ("chunk-dropped", lambda b: b[:HEADER] + b[HEADER + RECORD_BYTES :]),
    ("chunks-swapped", _swap_first_two_chunks),
    ("chunk-from-another-file", _splice_from_another_file),
    ("bytes-appended", lambda b: b + bytes(40)),
    ("plaintext", lambda b: json.dumps(RECORD).encode()),
    ("empty", lambda b: b""),
]


@pytest.mark.parametrize("tamper", [t for _, t in TAMPERINGS], ids=[n for n, _ in TAMPERINGS])
def test_any_change_is_refused(tamper: Callable[[bytes], bytes]) -> None:
    blob = KEY.seal(bytes(range(256)) * (3 * CHUNK // 256) + b"tail", purpose="download")
    with pytest.raises(TamperedError) as e:
        KEY.open(tamper(blob), purpose="download", name="/data/download.sealed")
    assert str(e.value) == (
        "refused /data/download.sealed: it does not decrypt with the device key "
        "(tampered, damaged or sealed with another key)"
    )


def test_another_key_or_purpose_is_refused() -> None:
    blob = KEY.seal(b"x", purpose="download")
    with pytest.raises(TamperedError):
        OTHER.open(blob, purpose="download", name="f")
    with pytest.raises(TamperedError):
        KEY.open(blob, purpose="state", name="f")


def test_key_never_shows() -> None:
    raw = bytes(range(KEY_BYTES))
    assert raw.hex() not in repr(DeviceKey(raw)) and "secret" in repr(DeviceKey(raw))
    with pytest.raises(ValueError, match="32 bytes"):
        DeviceKey(b"short")


def _key_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "device.key"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_key_file_loads(tmp_path: Path) -> None:
    key = load_device_key(_key_file(tmp_path, bytes(range(KEY_BYTES)), 0o400))
    assert key.open(KEY.seal(b"ok", purpose="p"), purpose="p", name="f") == b"ok"


@pytest.mark.parametrize(
    ("data", "mode", "error", "message"),
    [
        (bytes(KEY_BYTES), 0o640, InsecureStorageError, r"device key file .* has mode 0640"),
        (bytes(KEY_BYTES), 0o604, InsecureStorageError, r"device key file .* has mode 0604"),
        (bytes(31), 0o600, ConfigError, r"must hold exactly 32 bytes, not 31"),
        (bytes(64), 0o600, ConfigError, r"must hold exactly 32 bytes, not 64"),
        (b"", 0o600, ConfigError, r"must hold exactly 32 bytes, not 0"),
    ],
    ids=["group-readable", "world-readable", "short", "hex-or-long", "empty"],
)
def test_bad_key_file_refused(
    tmp_path: Path, data: bytes, mode: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        load_device_key(_key_file(tmp_path, data, mode))


def test_missing_key_file_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot read device key file .*device.key"):
        load_device_key(tmp_path / "device.key")


# -- the resume record -------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    ensure_private_dir(d)
    return d


def test_sealed_resume_record(data_dir: Path) -> None:
    store = StateStore(data_dir, key=KEY)
    store.save_download(RECORD)
    assert sorted(p.name for p in data_dir.iterdir()) == ["download.sealed"]
    blob = (data_dir / "download.sealed").read_bytes()
    assert b"firmware/model-x" not in blob and b"offset" not in blob
    assert (data_dir / "download.sealed").stat().st_mode & 0o777 == 0o600
    assert store.load_download() == RECORD
    store.clear_download()
    assert store.load_download() is None and not list(data_dir.iterdir())


def test_tampered_resume_record_is_refused(data_dir: Path) -> None:
    store = StateStore(data_dir, key=KEY)
    store.save_download(RECORD)
    path = data_dir / "download.sealed"
    path.write_bytes(_flip(-3)(path.read_bytes()))
    with pytest.raises(TamperedError, match=f"refused {path}: it does not decrypt"):
        store.load_download()
    with pytest.raises(TamperedError):
        StateStore(data_dir, key=OTHER).load_download()


def test_record_of_the_other_kind_is_ignored_and_cleared(data_dir: Path) -> None:
    StateStore(data_dir).save_download(RECORD)  # plaintext, before the key was configured
    sealed = StateStore(data_dir, key=KEY)
    assert sealed.load_download() is None
    sealed.save_download(RECORD)
    assert StateStore(data_dir).load_download() == RECORD  # the plaintext one, untouched
    sealed.clear_download()
    assert not list(data_dir.iterdir())


def test_config_storage_section(tmp_path: Path) -> None:
    base = """
device_id = "dev-1"
hardware_id = "model-x"
data_dir = "data"
trusted_root = "root.json"
[server]
metadata_url = "https://ota.example/metadata/"
targets_url = "https://ota.example/targets/"
[slots]
A = "a.img"
B = "b.img"
"""
    path = tmp_path / "ota-client.toml"
    path.write_text(base)
    assert load_config(path).storage.device_key_file is None
    path.write_text(base + '[storage]\ndevice_key_file = "keys/device.key"\n')
    assert load_config(path).storage.device_key_file == tmp_path / "keys" / "device.key"
    path.write_text(base + '[storage]\nkey = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting storage\.key"):
        load_config(path)
    path.write_text(base + '[storage]\ndevice_key_file = ""\n')
    with pytest.raises(ConfigError, match=r"storage\.device_key_file is empty"):
        load_config(path)
