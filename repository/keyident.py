"""Key identity: a keyid must be its key's own, and one key material is one vote.

python-tuf counts signatures per keyid, and the TUF keyid is a hash of the key's JSON, so the
same public key re-encoded (hex in upper case, an extra `keyval` field, a re-wrapped PEM) gets a
new keyid and would count twice toward a threshold. Keys are therefore compared by their
material: the public key parsed and re-serialised by `cryptography` (DER SubjectPublicKeyInfo),
whatever its encoding in the metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key

from repository.errors import BadInputError

_HEX = frozenset("0123456789abcdef")


def canonical_keyid(key_dict: Mapping[str, Any]) -> str:
    """The default TUF keyid: SHA-256 of the canonical JSON of keytype, scheme and keyval."""
    body = {k: key_dict[k] for k in ("keytype", "scheme", "keyval")}
    canonical = encode_canonical(body)
    assert canonical is not None
    return hashlib.sha256(canonical.encode()).hexdigest()


def material(key: Key) -> bytes:
    """The key's public material as DER SubjectPublicKeyInfo, independent of its encoding.

    Raises:
        BadInputError: the key's public value does not parse as a key of its type.
    """
    public = key.to_dict().get("keyval", {}).get("public")
    if not isinstance(public, str):
        raise BadInputError(f"key {key.keyid[:12]} has no public value")
    try:
        if key.keytype == "ed25519":
            pub: Any = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
        else:
            pub = serialization.load_pem_public_key(public.encode())
        der: bytes = pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return der
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise BadInputError(f"key {key.keyid[:12]}: not a valid {key.keytype} public key") from e


def fingerprint(key: Key) -> str:
    """What a holder compares with the ceremony sheet: 'fp:' and 16 hex of the material's hash.

    A key that does not parse gets a fingerprint of its raw JSON, so it still shows as different.
    """
    try:
        data = material(key)
    except BadInputError:
        data = b"unparsable:" + (encode_canonical(key.to_dict()) or "").encode()
    return "fp:" + hashlib.sha256(data).hexdigest()[:16]


def check_key(keyid: str, key: Key) -> None:
    """Refuse a key that is not in its canonical form under its canonical keyid.

    Raises:
        BadInputError: the keyid is not the key's own, or the key carries extra fields or a
            non-canonical encoding of its material.
    """
    shown = keyid[:12].encode("unicode_escape").decode()
    if len(keyid) != 64 or not set(keyid) <= _HEX:
        raise BadInputError(f"keyid {shown}...: not a lower-case SHA-256 keyid")
    key_dict = key.to_dict()
    if set(key_dict) != {"keytype", "scheme", "keyval"} or set(key_dict["keyval"]) != {"public"}:
        raise BadInputError(f"key {keyid[:12]} carries fields a TUF key does not have")
    expected = canonical_keyid(key_dict)
    if keyid != expected or key.keyid != expected:
        raise BadInputError(
            f"keyid {keyid[:12]} is not the keyid of its key (that key's keyid is {expected[:12]})"
        )
    material(key)
    if (
        key.keytype == "ed25519"
        and key_dict["keyval"]["public"] != key_dict["keyval"]["public"].lower()
    ):
        raise BadInputError(f"key {keyid[:12]}: public value not in lower-case hex")


def check_key_table(keys: Mapping[str, Key], where: str) -> None:
    """Every key canonical, and no key material listed twice (one key, one vote).

    Raises:
        BadInputError: naming the offending keys and `where` they are listed.
    """
    seen: dict[bytes, str] = {}
    try:
        for keyid, key in keys.items():
            other = seen.setdefault(material(key), keyid)
            if other != keyid:
                raise BadInputError(
                    f"keys {other[:12]} and {keyid[:12]} are the same key "
                    "(one key counts once toward a threshold)"
                )
        for keyid, key in keys.items():
            check_key(keyid, key)
    except BadInputError as e:
        raise BadInputError(f"{where}: {e}") from e


def same_material(a: Key, b: Key) -> bool:
    """Whether two keys are the same public key, however each is encoded."""
    try:
        return material(a) == material(b)
    except BadInputError:
        return False
