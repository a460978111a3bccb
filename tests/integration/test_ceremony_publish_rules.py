"""Publish re-checks every rule on the exact bytes: requests that holders signed but that would
publish a broken or partial repository are refused through the real `ota-repo`, nothing changes.

Each request here is planted in `.ota/staging` as a shell on the server could, with its id
recomputed and real holders' signatures: only the rules stand between it and the devices.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Root

from repository import keys, staging
from repository.signing import RoleChange, SigningRequest, content_digest
from tests.helpers.ceremony import Ceremony, production_repo, use_passphrase
from tests.helpers.repo import assert_one_line_error, content_hash, ota_repo, published


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Ceremony:
    mp = pytest.MonkeyPatch()
    use_passphrase(mp)
    c = production_repo(tmp_path_factory.mktemp("publish-rules"))
    c.new_key("release-2")
    mp.undo()
    return c


@pytest.fixture
def c(template: Ceremony, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ceremony:
    use_passphrase(monkeypatch)
    shutil.copytree(template.repo_dir, tmp_path / "repo")
    return Ceremony(tmp_path / "repo", template.keys_dir)


def _signed(c: Ceremony, md: Metadata[Any], *holders: str) -> Metadata[Any]:
    for holder in holders:
        md.sign(keys.load_signer(c.uri(holder), c.key(holder)), append=True)
    return md


def _plant(c: Ceremony, changes: list[RoleChange], summary: list[str] | None = None) -> str:
    """Write `changes` as a staged request with a matching id, as a shell on the server could."""
    repo = c.open()
    first = changes[0]
    req_id = f"{first.role}-v{first.md.signed.version}-{content_digest(changes)[:12]}"
    req = SigningRequest(
        req_id, "now", "attacker", summary or [], changes, staging.published_context(repo)
    )
    (c.repo_dir / ".ota" / "staging" / f"{req_id}.json").write_bytes(req.to_bytes())
    return req_id


def _next(c: Ceremony, role: str) -> Metadata[Any]:
    return staging.next_version(c.open(), role)


def _root_edit(edit: Callable[[Root], None]) -> Callable[[Ceremony], list[RoleChange]]:
    def make(c: Ceremony) -> list[RoleChange]:
        md = _next(c, "root")
        edit(md.signed)
        return [RoleChange("root", 1, _signed(c, md, "alice", "bob", "carol"))]

    return make


def _no_consistent_snapshot(root: Root) -> None:
    root.consistent_snapshot = False


def _threshold_true(root: Root) -> None:
    root.roles["root"].threshold = True


def _targets_two_of_one(root: Root) -> None:
    root.roles["targets"].threshold = 2


def _lookalike_delegation(c: Ceremony) -> list[RoleChange]:
    md = _next(c, "targets")
    key = c.key("release-2")
    name = "firmware-model-\u0445"  # Cyrillic ha, which looks like x
    md.signed.delegations = Delegations(
        keys={key.keyid: key},
        roles={name: DelegatedRole(name, [key.keyid], 1, True, ["firmware/model-x/*"])},
    )
    return [RoleChange("targets", 1, _signed(c, md, "release"))]


def _delegation_without_metadata(c: Ceremony) -> list[RoleChange]:
    md = _next(c, "targets")
    key = c.key("release-2")
    md.signed.delegations = Delegations(
        keys={key.keyid: key},
        roles={"fw-z": DelegatedRole("fw-z", [key.keyid], 1, True, ["firmware/z/*"])},
    )
    return [RoleChange("targets", 1, _signed(c, md, "release"))]


def _root_half_of_a_targets_rotation(c: Ceremony) -> list[RoleChange]:
    """The root half of 'rotate targets' (release -> release-2), its holders' signatures
    replayed into a root-only request: targets would be left signed by a removed key."""
    md = _next(c, "root")
    root = md.signed
    assert isinstance(root, Root)
    root.revoke_key(c.key("release").keyid, "targets")
    root.add_key(c.key("release-2"), "targets")
    return [RoleChange("root", 1, _signed(c, md, "alice", "bob", "carol"))]


@pytest.mark.parametrize(
    "make,message",
    [
        (_root_edit(_no_consistent_snapshot), "consistent_snapshot must be true"),
        (_root_edit(_threshold_true), "must be an integer"),
        (_root_edit(_targets_two_of_one), "can never be met"),
        (_lookalike_delegation, "bad role name"),
        (_delegation_without_metadata, "has no metadata"),
        (_root_half_of_a_targets_rotation, "all its roles or none"),
    ],
    ids=[
        "no-consistent-snapshot",
        "threshold-true",
        "threshold-over-keys",
        "lookalike-name",
        "no-metadata",
        "half-request",
    ],
)
def test_signed_but_broken_requests_are_refused_at_publish(
    c: Ceremony, make: Callable[[Ceremony], list[RoleChange]], message: str
) -> None:
    req_id = _plant(c, make(c))
    before = published(c.repo_dir)
    proc = ota_repo(c.repo_dir, "publish", req_id, check=False)
    assert_one_line_error(proc, message)
    assert published(c.repo_dir) == before


def test_a_float_threshold_is_a_clean_error(c: Ceremony) -> None:
    req_id = _plant(c, _root_edit(lambda r: None)(c))
    path = c.repo_dir / ".ota" / "staging" / f"{req_id}.json"
    data = json.loads(path.read_text())
    data["changes"][0]["metadata"]["signed"]["roles"]["targets"]["threshold"] = 1.5
    path.write_text(json.dumps(data))
    for args in (["request", "show", req_id], ["publish", req_id]):
        assert_one_line_error(ota_repo(c.repo_dir, *args, check=False), "is not an integer")


def test_an_expired_request_is_not_signed(c: Ceremony) -> None:
    md = _next(c, "targets")
    md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    req_id = _plant(c, [RoleChange("targets", 1, md)])
    digest = content_hash(c.repo_dir, req_id)
    proc = ota_repo(
        c.repo_dir, "sign", req_id, "--key", c.uri("release"), "--expect", digest, check=False
    )
    assert_one_line_error(proc, "has expired")


def test_a_discarded_request_put_back_is_refused(c: Ceremony) -> None:
    ota_repo(c.repo_dir, "renew", "targets")
    ((path,),) = [list((c.repo_dir / ".ota" / "staging").glob("*.json"))]
    saved = path.read_bytes()
    ota_repo(c.repo_dir, "request", "discard", path.stem)
    path.write_bytes(saved)  # put back, by hand or by a shell on the server
    for args in (
        ["request", "show", path.stem],
        ["sign", path.stem, "--key", c.uri("release"), "--expect", "0" * 64],
        ["publish", path.stem],
    ):
        assert_one_line_error(ota_repo(c.repo_dir, *args, check=False), "was discarded")


def test_the_audit_line_is_computed_not_copied_from_the_file(c: Ceremony) -> None:
    md = _signed(c, _next(c, "targets"), "release")
    req_id = _plant(c, [RoleChange("targets", 1, md)], summary=["routine renewal, nothing added"])
    ota_repo(c.repo_dir, "publish", req_id)
    audit = (c.repo_dir / ".ota" / "audit.log").read_text().splitlines()[-1]
    assert "routine renewal" not in audit
    assert content_digest([RoleChange("targets", 1, md)]) in audit
    assert "targets: version 1 -> 2" in audit


def test_delegations_are_terminating_by_default_and_overlaps_reach_the_review(c: Ceremony) -> None:
    pub = c.new_key("pub-a")
    signers = ["--sign-with", c.uri("release"), "--sign-with", c.uri("pub-a")]
    ota_repo(
        c.repo_dir, "delegate", "fw-a", "--paths", "firmware/a/*", "--key", str(pub),
        *signers, "--publish",
    )  # fmt: skip
    targets = json.loads((c.repo_dir / "metadata" / "2.targets.json").read_text())["signed"]
    assert targets["delegations"]["roles"][0]["terminating"] is True
    ota_repo(c.repo_dir, "delegate", "fw-any", "--paths", "firmware/*/*", "--key", str(pub))
    (path,) = (c.repo_dir / ".ota" / "staging").glob("*.json")
    shown = ota_repo(c.repo_dir, "request", "show", path.stem).stdout
    assert "WARNING overlaps: fw-a path firmware/a/* overlaps fw-any path firmware/*/*" in shown
