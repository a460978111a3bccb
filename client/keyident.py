"""Key identity in verified metadata: one key is one vote, under its own keyid.

Why the device checks this although ngclient already verified the metadata: python-tuf counts
signatures per keyid, and a TUF keyid is a hash of the key's JSON. The same public key written
differently (its ed25519 hex in upper case, an extra `keyval` field, a PEM wrapped at another
width) therefore gets another keyid, and listed twice it counts twice toward a threshold: one
holder meets a threshold of 2 alone. And a keyid that is not its key's own lets a review that
compares keyids show one key while another one verifies. The repository refuses both when
metadata is staged, imported, signed and published; this module is the device's defence in
depth, run on a root or targets role *after* ngclient verified it, so a repository that let
such metadata through still cannot get firmware onto the device with it.

It adds a refusal and never replaces a TUF check: signatures, thresholds, versions and expiry
stay python-tuf's. Rules, for each key table (`root.keys`, a role's `delegations.keys`):

- a keyid must be the key's canonical keyid: the hex SHA-256 of the canonical JSON of its
  `keytype`, `scheme` and `keyval` as written in the metadata (the TUF default keyid);
- the key's material must parse: ed25519 as 64 hex digits (either case), ecdsa and rsa as a PEM
  public key of that type (compared as the DER SubjectPublicKeyInfo `cryptography` writes);
- no two keys share material, whatever their keyids, encodings or schemes;
- a key dict holds only `keytype`, `scheme` and `keyval`, and `keyval` only `public`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key
from tuf.api.metadata import Root, Targets

from client.errors import MetadataError

_ED25519_HEX = re.compile(r"[0-9a-fA-F]{64}")
_PEM_TYPES: dict[str, type] = {
    "ecdsa": ec.EllipticCurvePublicKey,
    "ecdsa-sha2-nistp256": ec.EllipticCurvePublicKey,
    "ecdsa-sha2-nistp384": ec.EllipticCurvePublicKey,
    "rsa": rsa.RSAPublicKey,
}
_SHOWN = 16  # characters of a keyid shown in a message


def _show(text: str, limit: int = _SHOWN) -> str:
    """A keyid or name from metadata, bounded and escaped (it may hold terminal control
    sequences)."""
    cut = text[:limit].encode("unicode_escape").decode("ascii")
    return cut + ("..." if len(text) > limit else "")


def _names(names: Iterable[str]) -> str:
    """Field names from metadata, escaped, at most three of them."""
    ordered = sorted(names)
    shown = ", ".join("'" + _show(n, 40) + "'" for n in ordered[:3])
    return shown + (f" and {len(ordered) - 3} more" if len(ordered) > 3 else "")


def canonical_keyid(key: Key) -> str:
    """The TUF default keyid of `key` as written in the metadata (extra keyval fields count)."""
    body = {"keytype": key.keytype, "scheme": key.scheme, "keyval": key.keyval}
    return hashlib.sha256(str(encode_canonical(body)).encode()).hexdigest()


def key_material(key: Key) -> bytes:
    """The public key itself, independent of how the metadata writes it.

    Returns:
        For ed25519 the 32 raw bytes; for ecdsa and rsa the DER SubjectPublicKeyInfo.

    Raises:
        ValueError: the public value does not parse as a key of its keytype.
    """
    public = key.keyval.get("public")
    if not isinstance(public, str):
        raise ValueError("no public value")
    if key.keytype == "ed25519":
        if not _ED25519_HEX.fullmatch(public):
            raise ValueError("not 64 hex digits")
        return bytes.fromhex(public)
    kind = _PEM_TYPES.get(key.keytype)
    if kind is None:
        raise ValueError("unsupported keytype")
    try:
        parsed = serialization.load_pem_public_key(public.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError("not a PEM public key") from e
    if not isinstance(parsed, kind):
        raise ValueError(f"not an {key.keytype} public key")
    return parsed.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_keys(keys: Mapping[str, Key], *, where: str) -> None:
    """Refuse a key table in which a key does not count as exactly one vote.

    Args:
        keys: keyid -> key, as in `root.keys` or `delegations.keys`.
        where: What holds the table, for the message ("root version 2").

    Raises:
        MetadataError: a key does not parse, two keyids hold the same key material, a keyid
            is not its key's canonical keyid, or a key carries fields a TUF key does not have.
    """
    ordered = sorted(keys.items())
    material: dict[str, bytes] = {}
    for keyid, key in ordered:
        try:
            material[keyid] = key_material(key)
        except ValueError as e:
            raise MetadataError(
                f"refused {where}: key {_show(keyid)} cannot be parsed as {_show(key.keytype)}: {e}"
            ) from e
    seen: dict[bytes, str] = {}
    for keyid, key in ordered:
        first = seen.setdefault(material[keyid], keyid)
        if first != keyid:
            raise MetadataError(
                f"refused {where}: keyids {_show(first)} and {_show(keyid)} are the same "
                f"{key.keytype} key (one key must not count twice toward a threshold)"
            )
    for keyid, key in ordered:
        own = canonical_keyid(key)
        if keyid != own:
            raise MetadataError(
                f"refused {where}: keyid {_show(keyid)} is not the keyid of its key "
                f"(that is {_show(own)})"
            )
    for keyid, key in ordered:
        if key.unrecognized_fields:
            raise MetadataError(
                f"refused {where}: key {_show(keyid)} has unrecognized fields: "
                + _names(key.unrecognized_fields)
            )
        extra = set(key.keyval) - {"public"}
        if extra:
            raise MetadataError(
                f"refused {where}: key {_show(keyid)} keyval holds fields besides 'public': "
                + _names(extra)
            )


def check_root(root: Root, *, final: bool) -> None:
    """Refuse a verified root whose keys do not each count as one vote.

    Args:
        root: A root ngclient verified.
        final: True for the root the device now trusts: its whole key table is checked. False
            for a root on the way there (from the provisioned root up), whose only use was to
            verify the next root: the keys of its root role are checked.

    Raises:
        MetadataError: as for `check_keys`.
    """
    keys = root.keys
    if not final:
        keyids = root.roles[Root.type].keyids
        keys = {k: v for k, v in root.keys.items() if k in keyids}
    check_keys(keys, where=f"root version {root.version}")


def check_delegations(role: str, targets: Targets) -> None:
    """Refuse a verified targets role whose delegation keys do not each count as one vote.

    Raises:
        MetadataError: as for `check_keys`.
    """
    if targets.delegations is None or not targets.delegations.keys:
        return
    check_keys(
        targets.delegations.keys,
        where=f"the delegations of {_show(role, 64)} version {targets.version}",
    )
