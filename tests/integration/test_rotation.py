"""Root rotation: a real ngclient provisioned with root v1 follows v1 -> v2 -> v3 (keys replaced,
threshold raised), and refuses a root v2 below the previous or the new root's threshold."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from repository import rotation, staging
from repository.errors import BadInputError, ThresholdError
from repository.signing import SigningRequest, content_digest
from tests.helpers.ceremony import Ceremony, client, production_repo, use_passphrase
from tests.helpers.repo import published


@pytest.fixture
def ceremony(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ceremony:
    use_passphrase(monkeypatch)
    return production_repo(tmp_path)


def _stage_root(c: Ceremony, **change: object) -> SigningRequest:
    repo = c.open()
    with repo.writing("stage-request"):
        return rotation.change_top_level_keys(repo, **change)  # type: ignore[arg-type]


def _reviewed(c: Ceremony, req_id: str) -> str:
    """The content hash a holder reviewed (what `ota-repo request show` prints)."""
    return content_digest(staging.load(c.open(), req_id).changes)


def _sign(c: Ceremony, req_id: str, *holders: str) -> None:
    for holder in holders:
        staging.sign_staged(c.open(), req_id, c.uri(holder), expect=_reviewed(c, req_id))


def _trusted_root_version(cache: Path) -> int:
    return int(json.loads((cache / "metadata" / "root.json").read_bytes())["signed"]["version"])


def test_client_follows_rotations_v1_v2_v3(ceremony: Ceremony, tmp_path: Path) -> None:
    c = ceremony
    root_v1 = (c.repo_dir / "metadata" / "1.root.json").read_bytes()
    device = tmp_path / "device"
    updater, _ = client(c.repo_dir, device, root_v1)
    updater.refresh()

    # v2: carol leaves, dave joins (2 of 3 stays); alice and bob meet both thresholds.
    c.new_key("dave")
    req = _stage_root(c, role="root", add=[c.key("dave")], remove=[c.key("carol").keyid])
    _sign(c, req.id, "alice", "bob")
    staging.publish(c.open(), req.id)
    updater, _ = client(c.repo_dir, device, root_v1)
    updater.refresh()
    assert _trusted_root_version(device) == 2

    # v3: alice and bob leave, erin and frank join, threshold raised to 3 of 3. The previous
    # root needs 2 of (alice, bob, dave); the new one all of (dave, erin, frank). Erin signs an
    # exported copy on her own machine.
    c.new_key("erin")
    c.new_key("frank")
    req = _stage_root(
        c,
        role="root",
        add=[c.key("erin"), c.key("frank")],
        remove=[c.key("alice").keyid, c.key("bob").keyid],
        threshold=3,
    )
    _sign(c, req.id, "alice", "dave", "frank")
    with pytest.raises(ThresholdError, match="missing"):
        staging.publish(c.open(), req.id)
    exported = tmp_path / "usb" / "request.json"
    staging.export(c.open(), req.id, exported)
    pinned = c.repo_dir / "metadata" / "1.root.json"
    staging.sign_file(exported, c.uri("erin"), expect=_reviewed(c, req.id), trusted_root=pinned)
    staging.import_signatures(c.open(), exported)
    staging.publish(c.open(), req.id)

    updater, _ = client(c.repo_dir, device, root_v1)
    updater.refresh()
    assert _trusted_root_version(device) == 3
    # A device provisioned with v1 that never saw v2 walks the whole chain.
    fresh, fetcher = client(c.repo_dir, tmp_path / "late-device", root_v1)
    fresh.refresh()
    assert {"metadata/2.root.json", "metadata/3.root.json"} <= set(fetcher.fetched)
    for v in (1, 2, 3):
        assert (c.repo_dir / "metadata" / f"{v}.root.json").exists()
    root = Metadata.from_bytes((c.repo_dir / "metadata" / "3.root.json").read_bytes()).signed
    assert isinstance(root, Root)
    assert root.roles["root"].threshold == 3
    assert set(root.roles["root"].keyids) == {c.key(n).keyid for n in ("dave", "erin", "frank")}


@pytest.mark.parametrize(
    "change,signers,short_of",
    [
        # new root {alice, dave, erin} 2-of-3, signed by alice + dave + erin: only 1 old key
        (
            {"add": ["dave", "erin"], "remove": ["bob", "carol"]},
            ("alice", "dave", "erin"),
            "root v1 (previous)",
        ),
        # new root 3-of-3 {alice, bob, carol}, signed by alice + bob: the old 2 are met
        ({"threshold": 3}, ("alice", "bob"), "root v2 (new)"),
    ],
    ids=["below-previous-threshold", "below-new-threshold"],
)
def test_root_below_a_threshold_is_refused_by_repo_and_client(
    ceremony: Ceremony,
    tmp_path: Path,
    change: dict[str, object],
    signers: tuple[str, ...],
    short_of: str,
) -> None:
    c = ceremony
    for name in ("dave", "erin"):
        c.new_key(name)
    root_v1 = (c.repo_dir / "metadata" / "1.root.json").read_bytes()
    device = tmp_path / "device"
    updater, _ = client(c.repo_dir, device, root_v1)
    updater.refresh()
    req = _stage_root(
        c,
        role="root",
        add=[c.key(n) for n in change.get("add", [])],  # type: ignore[attr-defined]
        remove=[c.key(n).keyid for n in change.get("remove", [])],  # type: ignore[attr-defined]
        threshold=change.get("threshold"),
    )
    _sign(c, req.id, *signers)
    before = published(c.repo_dir)
    with pytest.raises(ThresholdError, match=re.escape(short_of) + " has"):
        staging.publish(c.open(), req.id)
    assert published(c.repo_dir) == before

    # Forced onto the server anyway, the client refuses it and keeps trusting v1.
    forced = staging.load(c.open(), req.id).change("root")
    assert forced is not None
    (c.repo_dir / "metadata" / "2.root.json").write_bytes(forced.md.to_bytes())
    updater, _ = client(c.repo_dir, device, root_v1)
    with pytest.raises(UnsignedMetadataError):
        updater.refresh()
    assert _trusted_root_version(device) == 1


def test_targets_key_rotation_publishes_root_and_targets_together(
    ceremony: Ceremony, tmp_path: Path
) -> None:
    c = ceremony
    c.new_key("release2")
    req = _stage_root(c, role="targets", add=[c.key("release2")], remove=[c.key("release").keyid])
    assert req.roles == ["root", "targets"]
    _sign(c, req.id, "alice", "bob")
    with pytest.raises(ThresholdError, match="targets as delegated by root v2 has 0/1"):
        staging.publish(c.open(), req.id)
    with pytest.raises(Exception, match="not listed"):
        # the old key no longer counts
        staging.sign_staged(c.open(), req.id, c.uri("release"), expect=_reviewed(c, req.id))
    _sign(c, req.id, "release2")
    staging.publish(c.open(), req.id)
    targets = Metadata.from_bytes((c.repo_dir / "metadata" / "2.targets.json").read_bytes())
    assert list(targets.signatures) == [c.key("release2").keyid]
    updater, _ = client(
        c.repo_dir, tmp_path / "device", (c.repo_dir / "metadata" / "1.root.json").read_bytes()
    )
    updater.refresh()


def test_online_timestamp_key_rotation(ceremony: Ceremony, tmp_path: Path) -> None:
    c = ceremony
    root_v1 = (c.repo_dir / "metadata" / "1.root.json").read_bytes()
    device = tmp_path / "device"
    client(c.repo_dir, device, root_v1)[0].refresh()
    c.new_key("timestamp2")
    req = _stage_root(
        c,
        role="timestamp",
        add=[c.key("timestamp2")],
        remove=[c.key("timestamp").keyid],
        online_uri=c.uri("timestamp2"),
    )
    _sign(c, req.id, "bob", "carol")
    staging.publish(c.open(), req.id)
    ts = Metadata.from_bytes((c.repo_dir / "metadata" / "timestamp.json").read_bytes())
    assert list(ts.signatures) == [c.key("timestamp2").keyid]
    client(c.repo_dir, device, root_v1)[0].refresh()
    assert c.open().refresh() == []  # the operator's cron keeps working with the new key


def test_renew_root_with_new_expiry_period(ceremony: Ceremony) -> None:
    c = ceremony
    repo = c.open()
    with repo.writing("stage-request"):
        req = rotation.renew(repo, "root", days=30)
    _sign(c, req.id, "carol", "alice")
    staging.publish(c.open(), req.id)
    root = c.open().current_metadata("root").signed
    assert root.version == 2
    assert root.expires < datetime.now(UTC) + timedelta(days=31)
    assert c.open().config.expiry_days["root"] == 30


def test_expired_request_is_refused(ceremony: Ceremony) -> None:
    c = ceremony
    repo = c.open()
    with repo.writing("stage-request"):
        req = rotation.renew(repo, "targets")
    _sign(c, req.id, "release")
    later = c.open()
    later.now = datetime.now(UTC) + timedelta(days=400)
    before = published(c.repo_dir)
    with pytest.raises(BadInputError, match="has expired"):
        staging.publish(later, req.id)
    assert published(c.repo_dir) == before
    staging.publish(c.open(), req.id)
