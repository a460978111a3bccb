"""The whole repository lifecycle through `ota-repo` subprocesses, checked after every step by
a real ngclient over HTTP on loopback."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.helpers.http_repo import fetch_all, serve_folder
from tests.helpers.repo import assert_encrypted_pem, assert_one_line_error, custom_json, ota_repo


def _client_accepts(repo: Path, tmp: Path, expected: dict[str, bytes]) -> None:
    trusted_root = (repo / "metadata" / "1.root.json").read_bytes()
    with serve_folder(repo) as url:
        got = fetch_all(url, trusted_root, tmp, list(expected))
    assert got == expected


def test_lifecycle_through_cli_accepted_by_a_real_client(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    out = ota_repo(repo, "init", "--dev")
    assert "WARNING: --dev" in out.stderr
    _client_accepts(repo, tmp_path / "c0", {})

    fw1, fw2 = tmp_path / "fw1.bin", tmp_path / "fw2.bin"
    fw1.write_bytes(b"\x7fELF v1" * 1000)
    fw2.write_bytes(b"\x7fELF v2" * 2000)
    ota_repo(
        repo,
        "add-target",
        str(fw1),
        "--path",
        "firmware/model-x/fw-1.0.0.bin",
        "--custom",
        custom_json("1.0.0"),
    )
    _client_accepts(repo, tmp_path / "c1", {"firmware/model-x/fw-1.0.0.bin": fw1.read_bytes()})

    out = ota_repo(
        repo,
        "add-target",
        str(fw2),
        "--path",
        "firmware/model-x/fw-2.0.0.bin",
        "--custom",
        custom_json("2.0.0"),
        "--json",
    )
    info = json.loads(out.stdout)
    assert info["length"] == fw2.stat().st_size
    # one client keeps its cache across states, as a device does
    both = {
        "firmware/model-x/fw-1.0.0.bin": fw1.read_bytes(),
        "firmware/model-x/fw-2.0.0.bin": fw2.read_bytes(),
    }
    _client_accepts(repo, tmp_path / "c1", both)

    ota_repo(repo, "remove-target", "firmware/model-x/fw-1.0.0.bin")
    _client_accepts(repo, tmp_path / "c1", {"firmware/model-x/fw-2.0.0.bin": fw2.read_bytes()})

    assert ota_repo(repo, "refresh").stdout.strip() == "fresh: nothing to do"
    status = json.loads(ota_repo(repo, "status", "--json").stdout)
    versions = {r["role"]: r["version"] for r in status["roles"]}
    assert versions == {"root": 1, "targets": 4, "snapshot": 4, "timestamp": 4}
    assert all(r["threshold_met"] and not r["expired"] for r in status["roles"])

    verified = json.loads(ota_repo(repo, "verify", "--days", "0.5", "--json").stdout)
    assert verified["targets_checked"] == 1
    assert "chain intact" in ota_repo(repo, "audit", "verify").stdout

    # consistent snapshots: every version a client may still hold stays published
    names = sorted(p.name for p in (repo / "metadata").iterdir())
    expected = ["1.root.json", "timestamp.json"]
    expected += [f"{v}.{role}.json" for v in (1, 2, 3, 4) for role in ("snapshot", "targets")]
    assert names == sorted(expected)


def test_private_state_is_owner_only_and_keys_encrypted(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    private = repo / ".ota"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE((private / "keys").stat().st_mode) == 0o700
    keys = sorted((private / "keys").glob("*.key"))
    assert [k.stem for k in keys] == ["root", "snapshot", "targets", "timestamp"]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert_encrypted_pem(key)
    assert stat.S_IMODE((private / "config.json").stat().st_mode) == 0o600


def test_init_refuses_an_existing_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    proc = ota_repo(repo, "init", "--dev", check=False)
    assert proc.returncode == 1
    assert "exists already" in proc.stderr


@pytest.mark.parametrize("days,ok", [(0.5, True), (2, False)], ids=["fresh", "expires-soon"])
def test_verify_days_margin(tmp_path: Path, days: float, ok: bool) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    proc = ota_repo(repo, "verify", "--days", str(days), check=False)
    assert (proc.returncode == 0) is ok
    if not ok:
        assert "timestamp v1" in proc.stderr


@pytest.mark.parametrize("count", ["16", "3"])
def test_dev_init_with_hash_bins_is_refused(tmp_path: Path, count: str) -> None:
    """Bins delegated by targets would be signed by an online key (and let the server approve
    firmware): init refuses them in one line and creates nothing; a publisher's role gets bins
    instead ('ota-repo delegate NAME ... --bins N')."""
    proc = ota_repo(tmp_path / "repo", "init", "--dev", "--hash-bins", count, check=False)
    assert_one_line_error(proc, "online key", "--bins N")
    assert not (tmp_path / "repo").exists()
