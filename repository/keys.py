"""Keys and signers.

Every private key is named by a securesystemslib signer URI and loaded through
`Signer.from_priv_key_uri`, so a key file, a PKCS#11 token and a cloud KMS key are one interface.
securesystemslib has no scheme for passphrase-encrypted key files, so this module registers one:
`encfile:PATH` (PKCS#8 PEM, encrypted with the passphrase through scrypt: `repository.pkcs8`).
Passphrases and PINs come from the environment, a file named by the environment, or a terminal
prompt; never from the command line. Every file is read through `repository.secretfiles`: a
regular file of bounded size, and owner-only where it holds a secret.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from securesystemslib.signer import (
    SIGNER_FOR_URI_SCHEME,
    CryptoSigner,
    Key,
    SecretsHandler,
    Signer,
    SSlibKey,
)

from repository.errors import BadInputError, KeyError_
from repository.fsutil import atomic_write
from repository.keyident import canonical_keyid, material
from repository.pkcs8 import encrypt_private_key
from repository.secretfiles import KEY_FILE_LIMIT, SECRET_LIMIT, UnsafeFileError, read_limited

ENCFILE_SCHEME = "encfile"
KEY_TYPES = ("ed25519", "ecdsa")

_SECRET_ENV = {
    "passphrase": ("OTA_KEY_PASSPHRASE", "OTA_KEY_PASSPHRASE_FILE"),
    "pin": ("OTA_HSM_PIN", "OTA_HSM_PIN_FILE"),
    "new passphrase": ("OTA_NEW_KEY_PASSPHRASE", "OTA_NEW_KEY_PASSPHRASE_FILE"),
}
_secret_cache: dict[str, str] = {}


def read_secret(kind: str, what: str = "") -> str:
    """Return a secret ("passphrase" or "pin") from env, a file named by env, or a prompt.

    The value is cached for the process: a PIN is asked once, and a wrong one is never retried
    (hardware tokens lock after a few wrong tries).

    Raises:
        KeyError_: no source provides the secret.
    """
    if kind in _secret_cache:
        return _secret_cache[kind]
    env_value, env_file = _SECRET_ENV[kind]
    value = os.environ.get(env_value) or None
    if value is None and os.environ.get(env_file):
        value = _read_secret_files(kind, env_file)[0]
    if value is None and sys.stdin.isatty():
        value = getpass.getpass(f"{kind.capitalize()}{' for ' + what if what else ''}: ")
    if value is None:
        raise KeyError_(f"no {kind} given: set {env_file} (or {env_value}), or run on a terminal")
    _secret_cache[kind] = value
    return value


def _read_secret_files(kind: str, env_file: str) -> list[str]:
    """The secrets in the file(s) named by `env_file` (several separated by os.pathsep)."""
    values = []
    for name in os.environ[env_file].split(os.pathsep):
        try:
            data = read_limited(Path(name), what=f"{kind} file", limit=SECRET_LIMIT, private=True)
            values.append(data.decode().rstrip("\r\n"))
        except UnsafeFileError as e:
            raise KeyError_(f"{e} (named by {env_file})") from e
        except UnicodeDecodeError as e:
            raise KeyError_(f"{kind} file {name} (named by {env_file}) is not UTF-8 text") from e
        except OSError as e:
            raise KeyError_(f"cannot read {kind} file named by {env_file}: {e.strerror}") from e
    return values


def new_passphrase() -> str | None:
    """The passphrase a re-encrypted key file gets, from OTA_NEW_KEY_PASSPHRASE(_FILE), or None
    (keep the current one). Never prompted, never from the command line."""
    env_value, env_file = _SECRET_ENV["new passphrase"]
    if os.environ.get(env_value):
        return os.environ[env_value]
    if os.environ.get(env_file):
        return _read_secret_files("new passphrase", env_file)[0]
    return None


def passphrase_candidates(handler: SecretsHandler) -> list[str]:
    """Every passphrase this process may try on a key file.

    `OTA_KEY_PASSPHRASE_FILE` may name several files separated by ':' (one process that opens
    keys of different people, e.g. a publisher's key and the repository's online keys); each
    key file opens with the first passphrase that decrypts it. New keys use the first.
    """
    first = handler("passphrase")
    env_file = _SECRET_ENV["passphrase"][1]
    if os.environ.get(_SECRET_ENV["passphrase"][0]) or os.pathsep not in os.environ.get(
        env_file, ""
    ):
        return [first]
    return [first, *_read_secret_files("passphrase", env_file)[1:]]


def secrets_handler(what: str = "") -> SecretsHandler:
    return lambda kind: read_secret(kind, what)


def forget_secrets() -> None:
    _secret_cache.clear()


def keyid_of(key_dict: dict[str, Any]) -> str:
    """The default TUF keyid: SHA-256 of the canonical JSON of keytype, scheme and keyval."""
    return canonical_keyid(key_dict)


class KeyMismatch(KeyError_):
    """The private key behind a URI is not the private half of the public key it was paired
    with (any other KeyError_, such as a wrong passphrase, is final)."""


class EncryptedFileSigner(Signer):
    """Signer URI scheme `encfile:PATH`: a passphrase-encrypted PKCS#8 PEM private key."""

    SCHEME = ENCFILE_SCHEME

    def __init__(self, inner: CryptoSigner) -> None:
        self._inner = inner

    @property
    def public_key(self) -> Key:
        return self._inner.public_key

    def sign(self, payload: bytes):  # type: ignore[no-untyped-def]
        return self._inner.sign(payload)

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> EncryptedFileSigner:
        scheme, _, path = priv_key_uri.partition(":")
        if scheme != cls.SCHEME or not path:
            raise ValueError(f"not an {cls.SCHEME} URI: {priv_key_uri}")
        if secrets_handler is None:
            raise ValueError("an encrypted key file needs a passphrase")
        private_key, _ = decrypt_key_file(Path(path), passphrase_candidates(secrets_handler))
        if not isinstance(public_key, SSlibKey):
            raise KeyError_(f"{path}: unsupported public key type")
        try:
            inner = CryptoSigner(private_key, public_key)
        except ValueError as e:
            raise KeyMismatch(f"{path} is not the private key of keyid {public_key.keyid}") from e
        # CryptoSigner checks types, not that the pair matches: compare the public halves.
        if keyid_of(SSlibKey.from_crypto(private_key.public_key()).to_dict()) != keyid_of(
            public_key.to_dict()
        ):
            raise KeyMismatch(f"{path} is not the private key of keyid {public_key.keyid}")
        return cls(inner)


SIGNER_FOR_URI_SCHEME[ENCFILE_SCHEME] = EncryptedFileSigner


_decrypted: dict[tuple[str, bytes, str], PrivateKeyTypes] = {}


def decrypt_key_file(path: Path, passphrases: list[str]) -> tuple[PrivateKeyTypes, str]:
    """The private key in an encrypted PEM file, opened with the first passphrase that fits
    (returned with it).

    Raises:
        KeyError_: not a small owner-only regular file, or no passphrase decrypts it.
        OSError: the file cannot be opened.
    """
    try:
        data = read_limited(path, what="private key file", limit=KEY_FILE_LIMIT, private=True)
    except UnsafeFileError as e:
        raise KeyError_(str(e)) from e
    for passphrase in passphrases:
        # scrypt makes each try cost ~0.3 s: a process that probes one file against several
        # candidate keys decrypts it once (cached by content and passphrase, for this process)
        cache_key = (str(path), hashlib.sha256(data).digest(), passphrase)
        if cache_key in _decrypted:
            return _decrypted[cache_key], passphrase
        try:
            private_key = serialization.load_pem_private_key(data, passphrase.encode())
        except (ValueError, TypeError):
            continue
        _decrypted[cache_key] = private_key
        return private_key, passphrase
    raise KeyError_(f"wrong passphrase or not an encrypted key file: {path}")


def reencrypt_key_file(path: Path) -> None:
    """Write the key in `path` again, encrypted with scrypt (`repository.pkcs8`), atomically and
    owner-only: with the passphrase of `new_passphrase()` if one is set, else the same one.

    Raises:
        KeyError_: the file cannot be opened with the passphrases given, or the new one is empty.
    """
    candidates = passphrase_candidates(secrets_handler(f"encfile:{path}"))
    try:
        private_key, current = decrypt_key_file(path, candidates)
    except FileNotFoundError as e:
        raise KeyError_(f"key file not found: {path}") from e
    except OSError as e:
        raise KeyError_(f"cannot read key file {path}: {e.strerror}") from e
    passphrase = new_passphrase()
    if passphrase is None:
        passphrase = current
    if not passphrase:
        raise KeyError_("refusing an empty passphrase: private keys are encrypted at rest")
    atomic_write(path, encrypt_private_key(private_key, passphrase.encode()), mode=0o600)


def load_signer(uri: str, public_key: Key) -> Signer:
    """Load the signer for `uri`, mapping every library error to one clear KeyError_."""
    try:
        return Signer.from_priv_key_uri(uri, public_key, secrets_handler(uri))
    except KeyError_:
        raise
    except FileNotFoundError as e:
        raise KeyError_(f"key file not found: {e.filename}") from e
    except OSError as e:
        raise KeyError_(f"cannot read key {uri}: {e.strerror}") from e
    except Exception as e:
        raise KeyError_(describe_signer_error(uri, e)) from e


def describe_signer_error(uri: str, e: Exception) -> str:
    name = type(e).__name__
    if name == "PinIncorrect":
        return f"wrong PIN for {uri}"
    if name in ("NoSuchToken", "NoSuchKey"):
        return f"no token or key for {uri} (is the token plugged in?)"
    if isinstance(e, KeyError) and "PYKCS11LIB" in str(e):
        return "PKCS#11 module unknown: set PYKCS11LIB to the token's library path"
    detail = str(e) or name
    return f"cannot use key {uri}: {detail}"


def public_key_from_file(path: Path) -> SSlibKey:
    """Read a public key file written by `write_public_key` (TUF key JSON).

    The keyid is recomputed from the key, never taken from the file.

    Raises:
        BadInputError: missing or malformed file.
    """
    try:
        data = json.loads(read_limited(path, what="public key file", limit=KEY_FILE_LIMIT))
        # Canonical form: the public value alone, ed25519 hex in lower case, so a re-encoded
        # copy of a key is that same key (and the same keyid), never a second vote.
        public = data["keyval"]["public"]
        if data["keytype"] == "ed25519" and isinstance(public, str):
            public = public.lower()
        key_dict = {
            "keytype": data["keytype"],
            "scheme": data["scheme"],
            "keyval": {"public": public},
        }
        key = SSlibKey.from_dict(keyid_of(key_dict), dict(key_dict))
        material(key)
    except UnsafeFileError:
        raise
    except FileNotFoundError as e:
        raise BadInputError(f"public key file not found: {path}") from e
    except (OSError, ValueError, KeyError, TypeError, BadInputError) as e:
        raise BadInputError(f"not a public key file: {path}") from e
    return key


def write_public_key(path: Path, key: Key) -> None:
    body = key.to_dict()
    body["keyid"] = key.keyid
    atomic_write(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def generate_key(
    directory: Path, name: str, *, key_type: str = "ed25519", passphrase: str | None = None
) -> tuple[Path, Path, SSlibKey]:
    """Generate a key pair: `NAME.key` (encrypted PKCS#8, 0600) and `NAME.pub` (TUF key JSON).

    Returns:
        Private key path, public key path, public key.

    Raises:
        BadInputError: unknown key type, or a key of that name exists already.
        KeyError_: no passphrase available.
    """
    if key_type not in KEY_TYPES:
        raise BadInputError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")
    if not name or "/" in name or name.startswith("."):
        raise BadInputError(f"bad key name {name!r}")
    priv_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    if priv_path.exists() or pub_path.exists():
        raise BadInputError(f"key {name} exists already in {directory}")
    if passphrase is None:
        passphrase = read_secret("passphrase", f"new key {name}")
    if not passphrase:
        raise KeyError_("refusing an empty passphrase: private keys are encrypted at rest")
    private_key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if key_type == "ed25519":
        private_key = ed25519.Ed25519PrivateKey.generate()
    else:
        private_key = ec.generate_private_key(ec.SECP256R1())
    pem = encrypt_private_key(private_key, passphrase.encode())
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(priv_path, pem, mode=0o600)
    key = SSlibKey.from_crypto(private_key.public_key())
    write_public_key(pub_path, key)
    return priv_path, pub_path, key


def find_signer(uri: str, candidates: dict[str, Key]) -> Signer:
    """Load the signer behind `uri` for whichever of `candidates` it holds the private half of.

    A probe signature decides, so this works the same for files, tokens and KMS keys.

    Raises:
        KeyError_: the key behind `uri` is none of `candidates` (or cannot be loaded).
    """
    if uri.startswith("hsm:"):
        return _find_hsm_signer(uri, candidates)
    last: KeyMismatch | None = None
    for key in candidates.values():
        try:
            signer = load_signer(uri, key)
            probe = b"secure-ota key probe"
            key.verify_signature(signer.sign(probe), probe)
            return signer
        except KeyMismatch as e:
            last = e  # another candidate may be the one: try it
        except KeyError_:
            raise  # a wrong passphrase or missing key file: final, never retried
        except Exception:  # noqa: BLE001, S112 - a mismatched key fails verification: try the next
            continue
    detail = f" ({last})" if last else ""
    raise KeyError_(f"the key at {uri} is not one of this role's keys{detail}")


def _find_hsm_signer(uri: str, candidates: dict[str, Key]) -> Signer:
    """A token key is picked by its public key (read without a PIN), then probed once: a wrong
    PIN is never retried, since real tokens lock after a few."""
    from repository.hsm import describe_hsm_error, public_key_of  # only where tokens are used

    key = candidates.get(public_key_of(uri).keyid)
    if key is None:
        raise KeyError_(f"the key at {uri} is not one of this role's keys")
    signer = load_signer(uri, key)
    probe = b"secure-ota key probe"
    try:
        key.verify_signature(signer.sign(probe), probe)
    except Exception as e:
        raise KeyError_(describe_hsm_error(uri, e) or describe_signer_error(uri, e)) from e
    return signer
