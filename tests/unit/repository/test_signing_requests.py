"""Signing request files as untrusted input: strict parsing, signatures only by listed keys,
content bound to the id, both root thresholds, and signing that refuses strangers."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Role, Root, Targets

from repository.errors import BadInputError, KeyError_, ThresholdError
from repository.signing import (
    RoleChange,
    SigningRequest,
    content_digest,
    sign,
    threshold_states,
    validate,
    verify_thresholds,
)

EXPIRES = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)


@pytest.fixture(scope="module")
def signers() -> dict[str, CryptoSigner]:
    return {n: CryptoSigner.generate_ed25519() for n in ("a", "b", "c", "d", "t", "x")}


def _root(signers: dict[str, CryptoSigner], holders: str, threshold: int, version: int) -> Root:
    root = Root(version=version, expires=EXPIRES, consistent_snapshot=True)
    root.roles = {r: Role([], 1) for r in ("root", "targets", "snapshot", "timestamp")}
    for h in holders:
        root.add_key(signers[h].public_key, "root")
    for role in ("targets", "snapshot", "timestamp"):
        root.add_key(signers["t"].public_key, role)
    root.roles["root"].threshold = threshold
    return root


def _request(
    signers: dict[str, CryptoSigner], *names: str
) -> tuple[SigningRequest, dict[str, Any]]:
    """Root v1 = 2 of (a, b, c); the request makes v2 = 2 of (a, b, d)."""
    v1 = Metadata(_root(signers, "abc", 2, 1))
    v2 = Metadata(_root(signers, "abd", 2, 2))
    for n in names:
        v2.sign(signers[n], append=True)
    changes = [RoleChange("root", 1, v2)]
    req = SigningRequest(
        f"root-v2-{content_digest(changes)[:12]}", "now", "me", ["x"], changes, {"root": v1}
    )
    return req, {"root": v1}


def test_both_root_thresholds_are_reported_and_enforced(signers: dict[str, CryptoSigner]) -> None:
    req, ctx = _request(signers, "a", "d")
    states = {s.label: s for s in threshold_states(req, ctx)}
    assert (len(states["root v1 (previous)"].signed), states["root v1 (previous)"].met) == (
        1,
        False,
    )
    assert states["root v2 (new)"].met
    with pytest.raises(ThresholdError, match=r"root v1 \(previous\) has 1/2"):
        verify_thresholds(req, ctx)
    req, ctx = _request(signers, "a", "b")
    verify_thresholds(req, ctx)


def test_round_trip_through_bytes(signers: dict[str, CryptoSigner]) -> None:
    req, ctx = _request(signers, "a")
    again = SigningRequest.from_bytes(req.to_bytes())
    assert again.id == req.id
    assert validate(again, ctx)


def _mutate(req: SigningRequest, edit: Any) -> bytes:
    data = json.loads(req.to_bytes())
    edit(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(format="other"), "not a secure-ota signing request"),
        (lambda d: d.update(format_version=1), "unsupported request format version"),
        (lambda d: d.update(id="../../x"), "bad request id"),
        (lambda d: d["changes"][0].update(role="a/b"), "bad role name"),
        (lambda d: d["changes"][0].update(base_version=-1), "bad base version"),
        (lambda d: d["changes"][0].update(base_version=True), "bad base version"),
        (lambda d: d["context"].update(snapshot={}), "unexpected context role"),
        (lambda d: d.pop("changes"), "not a valid signing request"),
        (lambda d: d["changes"][0]["metadata"].update(signed=[]), "not a valid signing request"),
    ],
    ids=[
        "format",
        "format-version",
        "id-traversal",
        "role-name",
        "negative-base",
        "bool-base",
        "context-role",
        "no-changes",
        "bad-metadata",
    ],
)
def test_malformed_files_are_refused(
    signers: dict[str, CryptoSigner], edit: Any, message: str
) -> None:
    req, _ = _request(signers)
    with pytest.raises(BadInputError, match=message):
        SigningRequest.from_bytes(_mutate(req, edit))


def test_content_is_bound_to_the_id(signers: dict[str, CryptoSigner]) -> None:
    req, ctx = _request(signers, "a")
    root = req.changes[0].md.signed
    assert isinstance(root, Root)
    root.roles["root"].threshold = 1
    with pytest.raises(BadInputError, match="does not match its id"):
        validate(req, ctx)


def test_signature_by_an_unlisted_key_is_refused(signers: dict[str, CryptoSigner]) -> None:
    req, ctx = _request(signers)
    req.changes[0].md.sign(signers["x"], append=True)
    with pytest.raises(BadInputError, match="not one of its keys"):
        validate(req, ctx)


def test_bad_signature_is_refused(signers: dict[str, CryptoSigner]) -> None:
    req, ctx = _request(signers)
    other, _ = _request(signers)
    other.changes[0].md.signed.version = 7  # a signature over different bytes
    sig = signers["a"].sign(other.changes[0].md.signed_bytes)
    req.changes[0].md.signatures[sig.keyid] = sig
    with pytest.raises(BadInputError, match="does not verify"):
        validate(req, ctx)


def test_online_roles_and_mixed_roles_are_refused(signers: dict[str, CryptoSigner]) -> None:
    req, ctx = _request(signers)
    snap = RoleChange("snapshot", 1, Metadata(Targets(version=2, expires=EXPIRES)))
    mixed = copy.deepcopy(req)
    mixed.changes.append(snap)
    with pytest.raises(BadInputError, match="root changes only travel with targets"):
        validate(mixed, ctx)
    alone = SigningRequest(
        f"snapshot-v2-{content_digest([snap])[:12]}", "now", "me", [], [snap], ctx
    )
    with pytest.raises(BadInputError, match="online role"):
        validate(alone, ctx)


def test_version_must_follow_the_base(signers: dict[str, CryptoSigner]) -> None:
    v1 = Metadata(_root(signers, "abc", 2, 1))
    v3 = Metadata(_root(signers, "abc", 2, 3))
    changes = [RoleChange("root", 1, v3)]
    req = SigningRequest(
        f"root-v3-{content_digest(changes)[:12]}", "", "", [], changes, {"root": v1}
    )
    with pytest.raises(BadInputError, match="does not follow v1"):
        validate(req, {"root": v1})


def test_sign_refuses_a_stranger_and_changes_nothing(
    signers: dict[str, CryptoSigner], monkeypatch: pytest.MonkeyPatch
) -> None:
    req, ctx = _request(signers, "a")
    before = req.to_bytes()
    stranger = signers["x"]
    monkeypatch.setattr(
        "repository.signing.find_signer",
        lambda uri, candidates: (
            (_ for _ in ()).throw(KeyError_(f"the key at {uri} is not one of this role's keys"))
            if stranger.public_key.keyid not in candidates
            else stranger
        ),
    )
    with pytest.raises(KeyError_, match="not listed for root: refused, nothing signed"):
        sign(req, "mem:x", ctx)
    assert req.to_bytes() == before
    monkeypatch.setattr("repository.signing.find_signer", lambda uri, candidates: signers["d"])
    assert sign(req, "mem:d", ctx) == ["root"]
    assert signers["d"].public_key.keyid in req.changes[0].md.signatures
