"""`ota-repo init-ceremony`: nothing is published until both root v1's and targets v1's
thresholds are met; refusals are one line; the result is what a fresh client accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from repository import keys
from tests.helpers.ceremony import client
from tests.helpers.repo import PASSPHRASE, assert_one_line_error, ota_repo, sign_request

NAMES = ("alice", "bob", "carol", "release", "snapshot", "timestamp")


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ceremony-keys")
    for name in NAMES:
        keys.generate_key(folder, name, passphrase=PASSPHRASE)
    return folder


def _args(k: Path, *extra: str) -> list[str]:
    return [
        "init-ceremony",
        *("--root-key", str(k / "alice.pub"), "--root-key", str(k / "bob.pub")),
        *("--root-key", str(k / "carol.pub"), "--targets-key", str(k / "release.pub")),
        *("--snapshot-key", str(k / "snapshot.pub"), "--snapshot-uri", f"encfile:{k}/snapshot.key"),
        *("--timestamp-key", str(k / "timestamp.pub")),
        *("--timestamp-uri", f"encfile:{k}/timestamp.key"),
        *extra,
    ]


def test_ceremony_publishes_only_when_both_thresholds_are_met(
    keys_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    req = tmp_path / "ceremony.json"
    ota_repo(repo, *_args(keys_dir, "--export", str(req)))
    assert not list((repo / "metadata").glob("*.json"))
    sign_request(tmp_path, str(req), f"encfile:{keys_dir}/alice.key")
    sign_request(tmp_path, str(req), f"encfile:{keys_dir}/release.key")
    proc = ota_repo(repo, "publish", str(req), check=False)
    assert_one_line_error(proc, "root v1 has 1/2")
    assert not list((repo / "metadata").glob("*.json"))
    sign_request(tmp_path, str(req), f"encfile:{keys_dir}/carol.key")
    ota_repo(repo, "publish", str(req))
    names = sorted(p.name for p in (repo / "metadata").glob("*.json"))
    assert names == ["1.root.json", "1.snapshot.json", "1.targets.json", "timestamp.json"]
    updater, _ = client(repo, tmp_path / "device", (repo / "metadata" / "1.root.json").read_bytes())
    updater.refresh()
    ota_repo(repo, "verify")
    ota_repo(repo, "audit", "verify")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--root-threshold", "1"], "--allow-single-root-key"),
        (["--root-threshold", "4"], "threshold 4 must be between 1 and its 3"),
        (["--snapshot-uri", "encfile:/nonexistent.key"], "key file not found"),
        (["--expiry", "root=0"], "--expiry takes ROLE=DAYS"),
    ],
    ids=["single-root-key", "threshold-above-keys", "online-key-missing", "bad-expiry"],
)
def test_ceremony_refusals_leave_nothing(
    keys_dir: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    repo = tmp_path / "repo"
    proc = ota_repo(repo, *_args(keys_dir, *extra), check=False)
    assert_one_line_error(proc, message)
    assert not (repo / ".ota" / "config.json").exists()
    assert not (repo / "metadata").exists() or not any((repo / "metadata").iterdir())


def test_second_ceremony_on_a_repository_is_refused(keys_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, *_args(keys_dir))
    proc = ota_repo(repo, *_args(keys_dir), check=False)
    assert_one_line_error(proc, "a repository exists already")
