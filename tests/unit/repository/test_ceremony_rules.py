"""The staging and publish rules, key identity and safe rendering, one defect per test."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Key, SSlibKey
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Root, Targets

from repository import render
from repository.devices import validate_id
from repository.errors import BadInputError
from repository.keyident import canonical_keyid, check_key_table, fingerprint
from repository.rules import check_role_name, check_signed, validate_pattern
from repository.signing import SigningRequest
from repository.targetfiles import validate_target_path

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def _key() -> SSlibKey:
    key = CryptoSigner.generate_ed25519().public_key
    assert isinstance(key, SSlibKey)
    return key


def _recoded(key: Key, **keyval: Any) -> SSlibKey:
    """The same public key spelled differently, under the keyid that spelling hashes to."""
    body = key.to_dict()
    body["keyval"] = {"public": body["keyval"]["public"].upper(), **keyval}
    if keyval:
        body["keyval"]["public"] = key.to_dict()["keyval"]["public"]
    return SSlibKey.from_dict(canonical_keyid(body), body)


def _root(threshold: Any = 2) -> Root:
    root = Root(expires=EXPIRES, consistent_snapshot=True)
    a, b, c = _key(), _key(), _key()
    for key in (a, b):
        root.add_key(key, "root")
    for role in ("targets", "snapshot", "timestamp"):
        root.add_key(c, role)
    root.roles["root"].threshold = threshold
    return root


@pytest.mark.parametrize(
    "name", ["root\n", "Root", "TARGETS", "Timestamp", "x\x1b[2J", "f\u0456rm"]
)
def test_bad_delegated_role_names(name: str) -> None:
    with pytest.raises(BadInputError, match="bad role name"):
        check_role_name(name)


def test_control_characters_in_a_name_are_said_and_escaped() -> None:
    with pytest.raises(BadInputError, match="control character") as e:
        check_role_name("fw\x1b]0;owned\x07")
    assert "\x1b" not in str(e.value) and "\\x1b" in str(e.value)


@pytest.mark.parametrize("pattern", ["firmware/z/*\b\b\b", "firmware/\u202ex/*", "a\u200b/*"])
def test_patterns_with_control_or_invisible_characters_are_refused(pattern: str) -> None:
    with pytest.raises(BadInputError, match="control character"):
        validate_pattern(pattern)


def test_ids_and_paths_match_in_full_not_up_to_a_newline() -> None:
    with pytest.raises(BadInputError):
        validate_id("device-1\n", "device id")
    with pytest.raises(BadInputError):
        validate_target_path("firmware/x/a.bin\n")


def test_one_key_spelled_twice_is_one_key() -> None:
    key = _key()
    for copy in (_recoded(key), _recoded(key, extra="x")):
        assert copy.keyid != key.keyid and fingerprint(copy) == fingerprint(key)
        with pytest.raises(BadInputError, match="are the same key"):
            check_key_table({key.keyid: key, copy.keyid: copy}, "root")


def test_a_keyid_that_is_not_its_keys_own_is_refused() -> None:
    honest, attacker = _key(), _key()
    with pytest.raises(BadInputError, match="is not the keyid of its key"):
        check_key_table({honest.keyid: SSlibKey.from_dict(honest.keyid, attacker.to_dict())}, "x")


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: setattr(r.roles["root"], "threshold", True), "integer"),
        (lambda r: setattr(r.roles["root"], "threshold", 1), "below 2"),
        (lambda r: setattr(r.roles["targets"], "threshold", 2), "can never be met"),
        (lambda r: setattr(r, "consistent_snapshot", False), "consistent_snapshot"),
        (lambda r: setattr(r, "spec_version", "1.1.0"), "spec_version"),
        (lambda r: r.unrecognized_fields.update(x=1), "fields this product does not know"),
        (lambda r: r.keys.update({(k := _key()).keyid: k}), "no role uses"),
    ],
    ids=["bool", "single", "unmeetable", "no-consistent", "spec", "unknown", "unused-key"],
)
def test_broken_roots_are_refused(edit: Any, message: str) -> None:
    root = _root()
    check_signed("root", root)
    edit(root)
    with pytest.raises(BadInputError, match=message):
        check_signed("root", root)


def test_a_delegation_with_a_look_alike_name_or_unmeetable_threshold_is_refused() -> None:
    key = _key()
    for name, threshold, message in (("f\u0456rmware-x", 1, "bad role name"), ("fw-x", 2, "never")):
        targets = Targets(expires=EXPIRES)
        targets.delegations = Delegations(
            keys={key.keyid: key},
            roles={name: DelegatedRole(name, [key.keyid], threshold, True, ["firmware/x/*"])},
        )
        with pytest.raises(BadInputError, match=message):
            check_signed("targets", targets)


def test_a_float_threshold_in_a_request_file_is_a_clean_error() -> None:
    md = Metadata(_root())
    data = {
        "format": "secure-ota/signing-request",
        "format_version": 2,
        "id": "root-v1-000000000000",
        "created": "now",
        "actor": "x",
        "summary": [],
        "changes": [{"role": "root", "base_version": 0, "metadata": md.to_dict()}],
        "context": {},
    }
    data["changes"][0]["metadata"]["signed"]["roles"]["root"]["threshold"] = 2.0
    with pytest.raises(BadInputError, match=r"2\.0 is not an integer"):
        SigningRequest.from_bytes(json.dumps(data).encode())


def test_rendering_escapes_flags_and_bounds() -> None:
    shown = render.text("fw\x1b[2J\x1b[H\b\u202e\u0430")
    assert all(c not in shown for c in "\x1b\b\u202e\u0430")
    assert "control characters" in shown and "non-ASCII" in shown
    long_a, long_b = "firmware/" + " " * 3000 + "a", "firmware/" + " " * 3000 + "b"
    assert "chars cut" in render.text(long_a)
    assert render.text(long_a) != render.text(long_b)  # the hash of the whole tells them apart
