"""Hardware keys (PKCS#11 tokens: YubiKey PIV, Nitrokey, a network HSM, SoftHSM2 in tests).

Signing goes through securesystemslib's `HSMSigner` (ECDSA P-256/P-384), named by a URI such as
`hsm:2?label=alice`. The PKCS#11 module comes from `PYKCS11LIB`; the PIN from `OTA_HSM_PIN_FILE`
(or `OTA_HSM_PIN`, or a prompt), asked once per process and never retried: real tokens lock
after a few wrong PINs.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlparse

from securesystemslib.signer import HSMSigner, SSlibKey

from repository.errors import KeyError_
from repository.keys import secrets_handler

SCHEME = "hsm"


def describe_hsm_error(uri: str, e: BaseException) -> str | None:
    """One line for a PKCS#11 failure, or None if `e` is not one."""
    name, text = type(e).__name__, str(e)
    if name == "PinIncorrect":
        return f"wrong PIN for {uri} (not retried: tokens lock after a few wrong PINs)"
    if name in ("PinLocked", "PinExpired"):
        return f"the token behind {uri} is locked: unlock it with its SO PIN or PUK"
    if "PYKCS11LIB" in text:
        return "PKCS#11 module unknown: set PYKCS11LIB to the token's library path"
    if name in ("NoSuchToken", "TokenNotPresent") or "No PKCS#11 token" in text:
        return f"no token for {uri} (is the token plugged in, and its label right?)"
    if name == "NoSuchKey" or "could not find ECDSA" in text or "No keys found" in text:
        return f"no ECDSA key with that id on the token for {uri}"
    if name in ("DeviceRemoved", "DeviceError", "TokenNotRecognised", "UnsupportedLibraryError"):
        return f"PKCS#11 token for {uri} is not usable: {name}"
    if isinstance(e, OSError) and "PYKCS11LIB" in os.environ:
        return f"cannot load the PKCS#11 module {os.environ['PYKCS11LIB']}: {e}"
    return None


def parse_uri(uri: str) -> tuple[int, str | None]:
    """Key id on the token and token label of an `hsm:` URI.

    Raises:
        KeyError_: not an `hsm:` URI.
    """
    parsed = urlparse(uri)
    if parsed.scheme != SCHEME:
        raise KeyError_(f"not a PKCS#11 key URI: {uri}")
    try:
        keyid = int(parsed.path) if parsed.path else HSMSigner.SCHEME_KEYID
    except ValueError as e:
        raise KeyError_(f"bad key id in {uri}") from e
    return keyid, dict(parse_qsl(parsed.query)).get("label")


def import_key(*, token_label: str | None, hsm_keyid: int = 2) -> tuple[str, SSlibKey]:
    """Read the public key of an ECDSA key on a token.

    Returns:
        The signer URI (`hsm:N?label=L`) and the public key.

    Raises:
        KeyError_: no module, no token, no such key, or a wrong PIN.
    """
    where = f"hsm:{hsm_keyid}" + (f"?label={token_label}" if token_label else "")
    try:
        uri, key = HSMSigner.import_(hsm_keyid, token_label, secrets_handler(where))
    except Exception as e:
        raise KeyError_(describe_hsm_error(where, e) or f"cannot use token: {e}") from e
    return uri, key


def public_key_of(uri: str) -> SSlibKey:
    """The public key behind an `hsm:` URI (read from the token, no signature made).

    Raises:
        KeyError_: as `import_key`.
    """
    keyid, label = parse_uri(uri)
    return import_key(token_label=label, hsm_keyid=keyid)[1]
