"""`ota-repo verify` reports every metadata file over the size budget devices accept (ngclient's
limits, or the config's `metadata_budget`); `ota-repo status` warns of every role, offline roles
included, that expires within its own lead time. Real `ota-repo` subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.repo import assert_one_line_error, custom_json, ota_repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("budget")
    repo = tmp / "repo"
    ota_repo(repo, "init", "--dev", "--expiry", "targets=10")
    for n in range(3):
        fw = tmp / f"fw-{n}.bin"
        fw.write_bytes(b"image %d" % n * 100)
        ota_repo(
            repo, "add-target", str(fw), "--path", f"firmware/model-x/fw-1.0.{n}.bin",
            "--custom", custom_json(f"1.0.{n}"),
        )  # fmt: skip
    return repo


def _set_config(repo: Path, **sections: object) -> None:
    config = repo / ".ota" / "config.json"
    data = json.loads(config.read_text())
    data.update(sections)
    config.write_text(json.dumps(data))


def test_verify_reports_every_file_over_the_configured_budget(repo: Path) -> None:
    ota_repo(repo, "verify")  # within ngclient's defaults
    size = (repo / "metadata" / "4.targets.json").stat().st_size
    proc = ota_repo(
        repo, "verify", "--budget", f"targets={size - 1}", "--budget", "timestamp=100", check=False
    )
    assert_one_line_error(
        proc, "2 metadata file(s) over budget", f"metadata/4.targets.json is {size} bytes",
        "metadata/timestamp.json",
    )  # fmt: skip
    try:
        _set_config(repo, metadata_budget={"snapshot": 10})
        proc = ota_repo(repo, "verify", check=False)
        assert_one_line_error(proc, "metadata/4.snapshot.json", "over the snapshot budget of 10")
    finally:
        _set_config(repo, metadata_budget={})
    ota_repo(repo, "verify")


def test_verify_refuses_a_malformed_budget(repo: Path) -> None:
    proc = ota_repo(repo, "verify", "--budget", "everything=10", check=False)
    assert_one_line_error(proc, "metadata budget everything=10")


def test_status_warns_of_a_role_within_its_lead_time(repo: Path) -> None:
    proc = ota_repo(repo, "status", "--json")
    warnings = json.loads(proc.stdout)["warnings"]
    assert [w.split()[0] for w in warnings] == ["targets"], warnings  # 10 days < 14
    assert "WARNING: targets v4 expires in" in proc.stderr


def test_status_warns_of_offline_roles_with_their_own_lead_time(repo: Path) -> None:
    proc = ota_repo(repo, "status", "--json", "--warn", "root=400", "--warn", "targets=5")
    warnings = json.loads(proc.stdout)["warnings"]
    assert [w.split()[0] for w in warnings] == ["root"], warnings
    try:
        _set_config(repo, expiry_warning_days={"snapshot": 8})
        warnings = json.loads(ota_repo(repo, "status", "--json").stdout)["warnings"]
        assert sorted(w.split()[0] for w in warnings) == ["snapshot", "targets"], warnings
    finally:
        _set_config(repo, expiry_warning_days={})
