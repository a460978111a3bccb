"""Private key files encrypted with scrypt: standard PKCS#8 (RFC 5958), PBES2 (RFC 8018) with
the scrypt KDF (RFC 7914 section 7) and AES-256-CBC.

cryptography's `BestAvailableEncryption` derives the key with PBKDF2-HMAC-SHA256 at 2,048
iterations, cheap to guess offline. This writes the same `ENCRYPTED PRIVATE KEY` PEM with a
memory-hard KDF instead, so every loader keeps working: cryptography's `load_pem_private_key`
(which also opens the older PBKDF2 files), and `openssl pkcs8` (whose default scrypt memory limit
of 32 MiB the parameters below stay under). Only encryption is done here; decryption is the
library's.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# OWASP Password Storage Cheat Sheet: scrypt N=2^17, r=8, p=1, or an equivalent such as
# N=2^14, r=8, p=5 (16 MiB instead of 128 MiB, the same work). About 0.3 s per key file opened.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5
KEY_LENGTH = 32  # AES-256

OID_PBES2 = "1.2.840.113549.1.5.13"
OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(x) for x in dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def encrypt_private_key(private_key: PrivateKeyTypes, passphrase: bytes) -> bytes:
    """`private_key` as an `ENCRYPTED PRIVATE KEY` PEM: PBES2 with scrypt and AES-256-CBC."""
    plain = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt, iv = os.urandom(16), os.urandom(16)
    key = Scrypt(salt=salt, length=KEY_LENGTH, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(
        passphrase
    )
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    scrypt_params = _seq(
        _octets(salt), _int(SCRYPT_N), _int(SCRYPT_R), _int(SCRYPT_P), _int(KEY_LENGTH)
    )
    pbes2 = _seq(_seq(_oid(OID_SCRYPT), scrypt_params), _seq(_oid(OID_AES256_CBC), _octets(iv)))
    der = _seq(_seq(_oid(OID_PBES2), pbes2), _octets(encrypted))
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + "\n".join(lines)
        + "\n-----END ENCRYPTED PRIVATE KEY-----\n"
    ).encode()
