"""Key identity on the device: one key, one vote, under its own keyid (client.keyident)."""

from __future__ import annotations

import base64
import copy
import hashlib
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key, SSlibKey
from tuf.api.metadata import DelegatedRole, Delegations, Root, Targets

from client.errors import MetadataError
from client.keyident import canonical_keyid, check_delegations, check_keys, check_root

EXPIRES = datetime.now(UTC) + timedelta(days=1)


def _ed25519() -> SSlibKey:
    return SSlibKey.from_crypto(ed25519.Ed25519PrivateKey.generate().public_key())


def _ecdsa() -> SSlibKey:
    return SSlibKey.from_crypto(ec.generate_private_key(ec.SECP256R1()).public_key())


def _rsa() -> SSlibKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SSlibKey.from_crypto(private.public_key())


def _keyid_of(data: dict[str, Any]) -> str:
    """The TUF default keyid, computed here independently of the module under test."""
    body = {k: data[k] for k in ("keytype", "scheme", "keyval")}
    return hashlib.sha256(str(encode_canonical(body)).encode()).hexdigest()


def _variant(key: Key, **change: Any) -> Key:
    """A copy of `key` with its dict edited, under the canonical keyid of the edited dict."""
    data = copy.deepcopy(key.to_dict())
    for name, value in change.items():
        if name == "keyval":
            data["keyval"] = value
        else:
            data[name] = value
    return Key.from_dict(_keyid_of(data), copy.deepcopy(data))


def _table(*keys: Key) -> dict[str, Key]:
    return {k.keyid: k for k in keys}


def _rewrapped(pem: str, width: int) -> str:
    der = serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), width))
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def test_honest_keys_pass() -> None:
    keys = [_ed25519(), _ecdsa(), _rsa()]
    for key in keys:
        assert canonical_keyid(key) == key.keyid == _keyid_of(key.to_dict())
    check_keys(_table(*keys), where="root version 1")
    check_keys({}, where="an empty table")


def test_keyid_that_is_not_the_keys_own_is_refused() -> None:
    honest, other = _ed25519(), _ed25519()
    planted = Key.from_dict(other.keyid, honest.to_dict())  # the display shows other's keyid
    with pytest.raises(MetadataError) as e:
        check_keys(_table(planted), where="root version 2")
    assert str(e.value) == (
        f"refused root version 2: keyid {other.keyid[:16]}... is not the keyid of its key "
        f"(that is {honest.keyid[:16]}...)"
    )


def test_upper_case_hex_copy_is_the_same_key() -> None:
    key = _ed25519()
    upper = _variant(key, keyval={"public": key.keyval["public"].upper()})
    assert upper.keyid != key.keyid  # python-tuf would count it as a second key
    with pytest.raises(MetadataError, match=r"^refused root version 2: keyids .* are the same "):
        check_keys(_table(key, upper), where="root version 2")


def test_extra_keyval_field_copy_is_the_same_key() -> None:
    key = _ed25519()
    extra = _variant(key, keyval={**key.keyval, "note": "backup"})
    assert extra.keyid != key.keyid
    with pytest.raises(MetadataError) as e:
        check_keys(_table(key, extra), where="targets version 3 delegations")
    message = str(e.value)
    assert message.startswith("refused targets version 3 delegations: keyids ")
    assert "are the same ed25519 key (one key must not count twice toward a threshold)" in message
    assert key.keyid[:16] in message and extra.keyid[:16] in message


def test_ecdsa_pem_wrapped_differently_is_the_same_key() -> None:
    key = _ecdsa()
    pem = key.keyval["public"]
    rewrapped = _variant(key, keyval={"public": _rewrapped(pem, 40)})
    assert rewrapped.keyval["public"] != pem and rewrapped.keyid != key.keyid
    with pytest.raises(MetadataError, match="are the same ecdsa key"):
        check_keys(_table(key, rewrapped), where="root version 2")


def test_rsa_pem_wrapped_differently_is_the_same_key() -> None:
    key = _rsa()
    rewrapped = _variant(key, keyval={"public": _rewrapped(key.keyval["public"], 76)})
    with pytest.raises(MetadataError, match="are the same rsa key"):
        check_keys(_table(key, rewrapped), where="root version 2")


UNPARSABLE = {
    "ed25519 hex too short": ("ed25519", "ed25519", "ab" * 31),
    "ed25519 not hex": ("ed25519", "ed25519", "zz" * 32),
    "ed25519 hex with spaces": ("ed25519", "ed25519", " ".join(["ab" * 16, "cd" * 16])),
    "ecdsa not PEM": ("ecdsa", "ecdsa-sha2-nistp256", "-----BEGIN PUBLIC KEY-----\nAAAA\n"),
    "rsa scheme over an ecdsa key": ("rsa", "rsassa-pss-sha256", None),
}


@pytest.mark.parametrize("case", list(UNPARSABLE), ids=list(UNPARSABLE))
def test_unparsable_key_is_refused(case: str) -> None:
    keytype, scheme, public = UNPARSABLE[case]
    public = public if public is not None else _ecdsa().keyval["public"]
    data = {"keytype": keytype, "scheme": scheme, "keyval": {"public": public}}
    key = Key.from_dict(_keyid_of(data), copy.deepcopy(data))
    with pytest.raises(MetadataError, match=r"^refused root version 2: key .* cannot be parsed"):
        check_keys(_table(key), where="root version 2")


def test_extra_keyval_field_alone_is_refused() -> None:
    key = _ed25519()
    extra = _variant(key, keyval={**key.keyval, "private": ""})
    with pytest.raises(MetadataError, match=r"keyval holds fields besides 'public': 'private'"):
        check_keys(_table(extra), where="root version 2")


def test_unrecognized_key_field_is_refused() -> None:
    key = _ed25519()
    data = {**key.to_dict(), "keyid_hash_algorithms": ["sha256"]}
    odd = Key.from_dict(key.keyid, copy.deepcopy(data))
    assert odd.unrecognized_fields  # python-tuf keeps it; the device does not accept it
    with pytest.raises(MetadataError, match=r"unrecognized fields: 'keyid_hash_algorithms'"):
        check_keys(_table(odd), where="root version 2")


def test_hostile_keyid_is_shown_escaped_on_one_line() -> None:
    key = _ed25519()
    hostile = "\x1b[2J\x1b[H\n" + key.keyid
    planted = Key.from_dict(hostile, key.to_dict())
    with pytest.raises(MetadataError) as e:
        check_keys({hostile: planted}, where="root version 2")
    message = str(e.value)
    assert "\n" not in message and "\x1b" not in message
    assert "keyid \\x1b[2J\\x1b[H\\n" in message


def _root(*, targets_keys: list[Key], root_keys: list[Key]) -> Root:
    root = Root(expires=EXPIRES, consistent_snapshot=True)
    for key in root_keys:
        root.add_key(key, "root")
    for key in targets_keys:
        root.add_key(key, "targets")
    for role in ("snapshot", "timestamp"):
        root.add_key(_ed25519(), role)
    return root


def test_root_duplicate_in_any_role_is_refused_in_the_trusted_root() -> None:
    key = _ed25519()
    upper = _variant(key, keyval={"public": key.keyval["public"].upper()})
    root = _root(targets_keys=[key, upper], root_keys=[_ed25519(), _ed25519()])
    root.version = 2
    check_root(root, final=False)  # its root role, which verified the next root, is sound
    with pytest.raises(MetadataError, match=r"^refused root version 2: keyids .* are the same "):
        check_root(root, final=True)


def test_root_duplicate_in_the_root_role_is_refused_on_the_way() -> None:
    key = _ed25519()
    upper = _variant(key, keyval={"public": key.keyval["public"].upper()})
    root = _root(targets_keys=[_ed25519()], root_keys=[key, upper])
    root.version = 3
    with pytest.raises(MetadataError, match=r"^refused root version 3: keyids .* are the same "):
        check_root(root, final=False)


def test_honest_root_passes() -> None:
    root = _root(targets_keys=[_ed25519(), _ecdsa()], root_keys=[_ed25519(), _rsa()])
    check_root(root, final=True)
    check_root(root, final=False)


def test_delegations_with_one_key_twice_are_refused() -> None:
    key = _ecdsa()
    copy_ = _variant(key, keyval={"public": _rewrapped(key.keyval["public"], 32)})
    targets = Targets(version=4, expires=EXPIRES)
    check_delegations("targets", targets)  # no delegations: nothing to check
    targets.delegations = Delegations(
        keys=_table(key, copy_),
        roles={
            "firmware-model-x": DelegatedRole(
                "firmware-model-x", [key.keyid, copy_.keyid], 2, True, ["firmware/model-x/*"]
            )
        },
    )
    with pytest.raises(MetadataError) as e:
        check_delegations("targets", targets)
    assert str(e.value).startswith("refused the delegations of targets version 4: keyids ")
    targets.delegations.keys = _table(key)
    check_delegations("targets", targets)
