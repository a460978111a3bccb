"""Production init: public keys only, thresholds enforced, offline holders sign with their URIs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from repository import keys
from repository.manager import OtaRepository
from repository.verify import verify_repository
from tests.helpers.repo import PASSPHRASE, assert_one_line_error, ota_repo, published


@pytest.fixture
def holders(tmp_path: Path) -> Path:
    """Three root holders, one targets holder, and the server's online keys."""
    folder = tmp_path / "keys"
    for name in ("alice", "bob", "carol", "release", "snapshot", "timestamp"):
        keys.generate_key(folder, name, passphrase=PASSPHRASE)
    return folder


def _init_args(k: Path, *extra: str) -> list[str]:
    return [
        "init",
        "--root-key",
        str(k / "alice.pub"),
        "--root-key",
        str(k / "bob.pub"),
        "--root-key",
        str(k / "carol.pub"),
        "--root-threshold",
        "2",
        "--targets-key",
        str(k / "release.pub"),
        "--snapshot-key",
        str(k / "snapshot.pub"),
        "--snapshot-uri",
        f"encfile:{k}/snapshot.key",
        "--timestamp-key",
        str(k / "timestamp.pub"),
        "--timestamp-uri",
        f"encfile:{k}/timestamp.key",
        *extra,
    ]


def test_production_init_with_two_of_three_root_holders(tmp_path: Path, holders: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(
        repo,
        *_init_args(
            holders,
            "--sign-with",
            f"encfile:{holders}/alice.key",
            "--sign-with",
            f"encfile:{holders}/carol.key",
            "--sign-with",
            f"encfile:{holders}/release.key",
        ),
    )
    root = json.loads((repo / "metadata" / "1.root.json").read_text())
    assert root["signed"]["roles"]["root"]["threshold"] == 2
    assert len(root["signatures"]) == 2
    assert root["signed"]["consistent_snapshot"] is True
    config = json.loads((repo / ".ota" / "config.json").read_text())
    # only the online keys are configured; offline keys never enter the repository's config
    assert sorted(config["signers"]) == ["snapshot", "timestamp"]
    assert not (repo / ".ota" / "keys").exists() or not any((repo / ".ota" / "keys").iterdir())
    verify_repository(repo)
    # the operator's refresh needs only the online keys
    assert ota_repo(repo, "refresh").returncode == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--sign-with", "encfile:{k}/alice.key", "--sign-with", "encfile:{k}/release.key"],
            "root v1 is not signed by enough keys",
        ),
        (
            ["--sign-with", "encfile:{k}/alice.key", "--sign-with", "encfile:{k}/bob.key"],
            "targets v1 is not signed by enough keys",
        ),
        (["--sign-with", "encfile:{k}/snapshot.key"], "not one of this role's keys"),
        (["--root-threshold", "1"], "--allow-single-root-key"),
        (["--root-threshold", "4", "--sign-with", "encfile:{k}/alice.key"], "threshold 4"),
    ],
    ids=[
        "root-below-threshold",
        "targets-unsigned",
        "stranger-key",
        "single-root-key",
        "threshold-above-keys",
    ],
)
def test_production_init_refusals_publish_nothing(
    tmp_path: Path, holders: Path, extra: list[str], message: str
) -> None:
    repo = tmp_path / "repo"
    args = _init_args(holders, *[e.replace("{k}", str(holders)) for e in extra])
    proc = ota_repo(repo, *args, check=False)
    assert_one_line_error(proc, message)
    assert not (repo / "metadata").exists() or not any((repo / "metadata").iterdir())


def test_single_root_key_needs_explicit_consent(tmp_path: Path, holders: Path) -> None:
    repo = tmp_path / "repo"
    args = _init_args(
        holders,
        "--root-threshold",
        "1",
        "--allow-single-root-key",
        "--sign-with",
        f"encfile:{holders}/bob.key",
        "--sign-with",
        f"encfile:{holders}/release.key",
    )
    ota_repo(repo, *args)
    verify_repository(repo)


def test_refresh_resigns_only_what_is_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    keys.forget_secrets()
    repo_dir = tmp_path / "repo"
    ota_repo(repo_dir, "init", "--dev")
    before = published(repo_dir)
    assert OtaRepository.load(repo_dir).refresh() == []
    assert published(repo_dir) == before

    later = OtaRepository.load(repo_dir)
    later.now = datetime.now(UTC) + timedelta(hours=13)  # past half of timestamp's day
    assert later.refresh() == ["timestamp"]
    again = OtaRepository.load(repo_dir)
    again.now = later.now
    assert again.refresh() == []

    much_later = OtaRepository.load(repo_dir)
    much_later.now = datetime.now(UTC) + timedelta(days=4)  # past half of snapshot's week
    assert much_later.refresh() == ["snapshot", "timestamp"]
    assert much_later.timestamp().version == 3
    assert much_later.snapshot().version == 2
