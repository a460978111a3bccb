"""Small parts of the key lifecycle: change descriptions, path patterns, the firmware contract,
PKCS#11 error messages, signer locations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Role,
    Root,
    SuccinctRoles,
    TargetFile,
    Targets,
)

from repository.changes import describe
from repository.errors import BadInputError, KeyError_
from repository.hsm import describe_hsm_error, parse_uri
from repository.keyident import fingerprint
from repository.keyinfo import signer_location
from repository.publisher.firmware import FirmwareRelease, check_version
from repository.rules import patterns_overlap, validate_pattern

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def test_root_changes_in_words() -> None:
    a, b = CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()
    old = Root(expires=EXPIRES)
    old.roles = {r: Role([], 1) for r in ("root", "targets", "snapshot", "timestamp")}
    old.add_key(a.public_key, "root")
    new = Root(version=2, expires=EXPIRES + timedelta(days=1))
    new.roles = {r: Role([], 1) for r in ("root", "targets", "snapshot", "timestamp")}
    new.add_key(b.public_key, "root")
    new.roles["root"].threshold = 1
    new.roles["targets"].threshold = 1
    lines = describe("root", old, new)
    assert (
        f"root: root key added {b.public_key.keyid[:12]} (ed25519 {fingerprint(b.public_key)})"
        in lines
    )
    assert f"root: root key removed {a.public_key.keyid[:12]}" in lines
    assert "root: version 1 -> 2" in lines


def test_targets_changes_in_words() -> None:
    key = CryptoSigner.generate_ed25519().public_key
    old = Targets(expires=EXPIRES)
    old.targets["a.bin"] = TargetFile.from_data("a.bin", b"a")
    new = Targets(version=2, expires=EXPIRES)
    new.targets["b.bin"] = TargetFile.from_data("b.bin", b"bb")
    role = DelegatedRole("fw-x", [key.keyid], 1, True, paths=["firmware/x/*"])
    new.delegations = Delegations({key.keyid: key}, roles={"fw-x": role})
    lines = describe("targets", old, new)
    assert "targets: target added: b.bin (2 bytes)" in lines
    assert "targets: target removed: a.bin" in lines
    assert any(
        line.startswith("targets: delegation added: fw-x paths firmware/x/*") for line in lines
    )
    bins = Targets(version=3, expires=EXPIRES)
    bins.delegations = Delegations(
        {key.keyid: key}, succinct_roles=SuccinctRoles([key.keyid], 1, 4, "bins")
    )
    assert any(
        "hash-bin delegation added: 16 bins" in line for line in describe("targets", new, bins)
    )
    assert "targets: delegation revoked: fw-x" in describe("targets", new, bins)


@pytest.mark.parametrize(
    "a,b,overlap",
    [
        ("firmware/model-x/*", "firmware/model-y/*", False),
        ("firmware/model-x/*", "firmware/*/*", True),
        ("firmware/model-x/*", "firmware/model-x/fw-1.bin", True),
        ("firmware/*", "firmware/model-x/*", False),  # one segment per '*'
        ("firmware/model-?/*", "firmware/model-x/*", True),
    ],
    ids=["different-models", "wildcard-model", "exact-file", "depths-differ", "question-mark"],
)
def test_pattern_overlap(a: str, b: str, overlap: bool) -> None:
    assert patterns_overlap(a, b) is overlap
    assert patterns_overlap(b, a) is overlap


@pytest.mark.parametrize("pattern", ["", "/etc/*", "firmware//x", "firmware/../x", "a\\b"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(BadInputError, match="bad path pattern"):
        validate_pattern(pattern)


def test_firmware_contract(tmp_path: Path) -> None:
    release = FirmwareRelease(tmp_path / "img", "model-x", "1.4.2", 3, [("1.4.1", tmp_path / "d")])
    (image, image_path, custom), (_, delta_path, delta_custom) = release.files()
    assert image_path == "firmware/model-x/fw-1.4.2.bin"
    assert delta_path == "firmware/model-x/fw-1.4.1-to-1.4.2.delta"
    assert custom == {
        "firmware": {
            "version": "1.4.2",
            "hardware_ids": ["model-x"],
            "security_counter": 3,
            "deltas": {"1.4.1": delta_path},
        }
    }
    assert delta_custom["firmware_delta"]["to"] == "1.4.2"
    assert "deltas" not in FirmwareRelease(image, "model-x", "1.0").files()[0][2]["firmware"]


@pytest.mark.parametrize("version", ["1.x", "01.2", "1..2", "", "-1", "1.2.3.4.5.6.7"])
def test_bad_versions(version: str) -> None:
    with pytest.raises(BadInputError, match="dotted integers"):
        check_version(version)


class PinIncorrect(Exception):  # python-pkcs11's exception names, as raised by the token
    pass


class NoSuchToken(Exception):
    pass


@pytest.mark.parametrize(
    "error,message",
    [
        (PinIncorrect(), "wrong PIN for hsm:2?label=a (not retried"),
        (NoSuchToken(), "no token for hsm:2?label=a"),
        (ValueError("No PKCS#11 token found for label a"), "no token for hsm:2?label=a"),
        (ValueError("PYKCS11LIB environment variable must be set"), "set PYKCS11LIB"),
        (ValueError("could not find ECDSA key on the PKCS#11 token"), "no ECDSA key"),
    ],
    ids=["pin", "no-token", "no-token-label", "no-module", "no-key"],
)
def test_hsm_errors_are_one_clear_line(error: Exception, message: str) -> None:
    described = describe_hsm_error("hsm:2?label=a", error)
    assert described is not None and message in described
    assert describe_hsm_error("hsm:2", RuntimeError("other")) is None


def test_hsm_uri() -> None:
    assert parse_uri("hsm:2?label=alice") == (2, "alice")
    assert parse_uri("hsm:") == (2, None)
    with pytest.raises(KeyError_):
        parse_uri("encfile:x")
    with pytest.raises(KeyError_):
        parse_uri("hsm:two")


@pytest.mark.parametrize(
    "uri,where",
    [
        (None, "offline"),
        ("encfile:keys/root.key", "file keys/root.key"),
        ("hsm:2?label=alice", "PKCS#11 token"),
        ("awskms:arn:aws:kms:eu-west-1:1:key/abc", "KMS"),
    ],
    ids=["offline", "file", "token", "kms"],
)
def test_signer_location(uri: str | None, where: str) -> None:
    assert where in signer_location(uri)
