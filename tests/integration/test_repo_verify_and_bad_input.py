"""`ota-repo verify` catches what a client would refuse; bad input is refused in one line and
leaves the published repository byte-for-byte unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from repository.manager import OtaRepository
from tests.helpers.repo import (
    PASSPHRASE,
    assert_one_line_error,
    cli_env,
    custom_json,
    ota_repo,
    published,
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"firmware image 1.0.0" * 500)
    ota_repo(
        repo,
        "add-target",
        str(fw),
        "--path",
        "firmware/model-x/fw-1.0.0.bin",
        "--custom",
        custom_json("1.0.0"),
    )
    return repo


def _tamper_target(repo: Path) -> None:
    (target,) = (repo / "targets" / "firmware" / "model-x").iterdir()
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    target.write_bytes(bytes(data))


def _delete_versioned_metadata(repo: Path) -> None:
    (repo / "metadata" / "2.targets.json").unlink()


def _truncate_snapshot(repo: Path) -> None:
    path = repo / "metadata" / "2.snapshot.json"
    path.write_bytes(path.read_bytes()[:-40])


@pytest.mark.parametrize(
    "tamper,message",
    [
        (_tamper_target, "LengthOrHashMismatchError"),
        (_delete_versioned_metadata, "not found: metadata/2.targets.json"),
        (_truncate_snapshot, "Failed to deserialize"),
    ],
    ids=["tampered-target", "deleted-versioned-metadata", "truncated-snapshot"],
)
def test_verify_catches(repo: Path, tamper: Callable[[Path], None], message: str) -> None:
    ota_repo(repo, "verify")
    tamper(repo)
    proc = ota_repo(repo, "verify", check=False)
    assert_one_line_error(proc, message)


def test_verify_catches_an_expired_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    repo_dir = tmp_path / "repo"
    ota_repo(repo_dir, "init", "--dev")
    # a timestamp signed two days ago with a one-day period has expired
    repo = OtaRepository.load(repo_dir)
    repo.now = datetime.now(UTC) - timedelta(days=2)
    with repo.writing("test: sign in the past"):
        repo.do_timestamp(force=True)
    proc = ota_repo(repo_dir, "verify", check=False)
    assert_one_line_error(proc, "ExpiredMetadataError")


def _corrupt_timestamp(repo: Path) -> None:
    (repo / "metadata" / "timestamp.json").write_text('{"signed": ')


BAD_INPUT = [
    (
        "missing-file",
        ["add-target", "{tmp}/nope.bin", "--path", "firmware/model-x/a.bin"],
        None,
        None,
        "file not found",
    ),
    ("absolute-path", ["add-target", "{fw}", "--path", "/etc/passwd"], None, None, "relative"),
    ("dotdot-path", ["add-target", "{fw}", "--path", "firmware/../../x"], None, None, "'..'"),
    ("empty-segment", ["add-target", "{fw}", "--path", "firmware//x.bin"], None, None, "empty"),
    ("empty-path", ["add-target", "{fw}", "--path", ""], None, None, "empty"),
    (
        "backslash-path",
        ["add-target", "{fw}", "--path", "firmware\\x.bin"],
        None,
        None,
        "characters",
    ),
    (
        "wrong-passphrase",
        ["add-target", "{fw}", "--path", "firmware/model-x/b.bin"],
        {"OTA_KEY_PASSPHRASE": "wrong"},
        None,
        "wrong passphrase",
    ),
    (
        "no-passphrase",
        ["add-target", "{fw}", "--path", "firmware/model-x/b.bin"],
        {"OTA_KEY_PASSPHRASE": ""},
        None,
        "no passphrase",
    ),
    (
        "unknown-role",
        ["add-target", "{fw}", "--path", "firmware/model-x/b.bin", "--role", "nobody"],
        None,
        None,
        "unknown role",
    ),
    (
        "bad-custom-json",
        ["add-target", "{fw}", "--path", "firmware/model-x/b.bin", "--custom", "{oops"],
        None,
        None,
        "not valid JSON",
    ),
    (
        "remove-unknown-target",
        ["remove-target", "firmware/model-x/none.bin"],
        None,
        None,
        "not a target",
    ),
    (
        "corrupted-metadata",
        ["add-target", "{fw}", "--path", "firmware/model-x/b.bin"],
        None,
        _corrupt_timestamp,
        "unreadable: metadata/timestamp.json",
    ),
    ("no-repository", ["--repo", "{tmp}/empty", "status"], None, None, "no repository"),
]


@pytest.mark.parametrize(
    "args,env,damage,message", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused_and_changes_nothing(
    repo: Path,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str] | None,
    damage: Callable[[Path], None] | None,
    message: str,
) -> None:
    fw = tmp_path / "fw2.bin"
    fw.write_bytes(b"another image")
    if damage:
        damage(repo)
    before = published(repo)
    audit_before = (repo / ".ota" / "audit.log").read_bytes()
    args = [a.replace("{tmp}", str(tmp_path)).replace("{fw}", str(fw)) for a in args]
    proc = ota_repo(repo, *args, env=cli_env(**(env or {})), check=False)
    assert_one_line_error(proc, message)
    assert published(repo) == before
    assert (repo / ".ota" / "audit.log").read_bytes() == audit_before


def test_status_json_reports_every_role(repo: Path) -> None:
    status = json.loads(ota_repo(repo, "status", "--json").stdout)
    assert [r["role"] for r in status["roles"]] == ["root", "snapshot", "targets", "timestamp"]
    targets = next(r for r in status["roles"] if r["role"] == "targets")
    assert targets["targets"] == 1
    assert targets["signed_by"] == targets["keyids"]


def test_verify_catches_a_delegation_without_published_metadata(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import DelegatedRole, Delegations

    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    manager = OtaRepository.load(repo)
    with manager.writing("test: delegate without the role's metadata"):
        with manager.edit_targets() as targets:
            targets.delegations = Delegations(keys={}, roles={})
            assert targets.delegations.roles is not None
            targets.delegations.roles["firmware-model-y"] = DelegatedRole(
                "firmware-model-y", [], 1, True, paths=["firmware/model-y/*"]
            )
            targets.add_key(CryptoSigner.generate_ed25519().public_key, "firmware-model-y")
        manager.publish_snapshot_and_timestamp()
    proc = ota_repo(repo, "verify", check=False)
    assert_one_line_error(proc, "targets delegates to firmware-model-y but snapshot lists no")
