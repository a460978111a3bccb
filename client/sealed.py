"""Encryption at rest with the device key (`[storage] device_key_file`).

A sealed file is AES-256-GCM in chunks::

    magic (8) | file id (16) | chunk 0 | chunk 1 | ... | chunk n-1
    chunk = nonce (12, random) | ciphertext of up to CHUNK bytes | tag (16)

Each chunk's associated data binds the header (magic, file id), the purpose of the file (so a
sealed file cannot stand in for another kind), the chunk's index (no reordering) and whether it is
the last chunk (no truncation at a chunk boundary). Any change, a different key, or a file that
was never sealed fails authentication and is refused with `TamperedError`.

This protects what the client keeps in its data directory; it never replaces TUF: image bytes
are still judged by python-tuf on the plaintext.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.errors import ConfigError, StorageError, TamperedError
from client.storage import atomic_write, check_private_file, read_limited

KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 4096  # read at most this much (a longer file is refused unread)
MAGIC = b"OTASEAL1"
CHUNK = 64 * 1024
_ID = 16
_NONCE = 12
_TAG = 16
_HEADER = len(MAGIC) + _ID


class DeviceKey:
    """A 32-byte AES key that seals and opens files; never printed or logged."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(f"a device key is {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "DeviceKey(<secret>)"

    @staticmethod
    def _aad(header: bytes, purpose: str, index: int, final: bool) -> bytes:
        return header + purpose.encode() + b"\0" + index.to_bytes(8, "big") + bytes([final])

    def seal(self, data: bytes, *, purpose: str) -> bytes:
        """Encrypt and authenticate `data` for files of kind `purpose`."""
        header = MAGIC + os.urandom(_ID)
        out = [header]
        count = max(1, -(-len(data) // CHUNK))
        for index in range(count):
            nonce = os.urandom(_NONCE)
            chunk = data[index * CHUNK : (index + 1) * CHUNK]
            aad = self._aad(header, purpose, index, index == count - 1)
            out += [nonce, self._aead.encrypt(nonce, chunk, aad)]
        return b"".join(out)

    def open(self, blob: bytes, *, purpose: str, name: str) -> bytes:
        """Decrypt what `seal` made for `purpose`; `name` is for the error message.

        Raises:
            TamperedError: the data is not exactly what this key sealed for `purpose`.
        """
        refused = TamperedError(
            f"refused {name}: it does not decrypt with the device key "
            "(tampered, damaged or sealed with another key)"
        )
        if len(blob) < _HEADER + _NONCE + _TAG or not blob.startswith(MAGIC):
            raise refused
        header = blob[:_HEADER]
        out = []
        pos, index = _HEADER, 0
        while pos < len(blob):
            record = blob[pos : pos + _NONCE + CHUNK + _TAG]
            if len(record) < _NONCE + _TAG:
                raise refused
            pos += len(record)
            aad = self._aad(header, purpose, index, pos == len(blob))
            try:
                out.append(self._aead.decrypt(record[:_NONCE], record[_NONCE:], aad))
            except InvalidTag as e:
                raise refused from e
            index += 1
        return b"".join(out)

    def write(self, path: Path, data: bytes, *, purpose: str) -> None:
        """Atomically replace `path` with `data` sealed for `purpose`.

        Raises:
            StorageError: the file cannot be written.
        """
        atomic_write(path, self.seal(data, purpose=purpose))

    def read(self, path: Path, *, purpose: str) -> bytes | None:
        """The plaintext of the sealed file `path`, or None if it does not exist.

        Raises:
            TamperedError: it does not authenticate.
            StorageError: it cannot be read.
        """
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror or e}") from e
        return self.open(blob, purpose=purpose, name=str(path))


def load_device_key(path: Path) -> DeviceKey:
    """Read the device key: exactly 32 bytes in a file only its owner can read.

    Raises:
        InsecureStorageError: the file is readable or writable by group or others.
        StorageError: the file does not exist or cannot be read.
        ConfigError: it does not hold exactly 32 bytes, or is not a regular file.
    """
    check_private_file(path, "device key file")
    try:
        key = read_limited(path, "device key file", MAX_KEY_FILE_BYTES)
    except OSError as e:
        raise StorageError(f"cannot read device key file {path}: {e.strerror or e}") from e
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"device key file {path} must hold exactly {KEY_BYTES} bytes, not {len(key)} "
            f"(make one with: head -c {KEY_BYTES} /dev/urandom)"
        )
    return DeviceKey(key)
