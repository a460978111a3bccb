"""Succinct hash bins (TAP 15): 10,000 targets, one more re-signs one bin + snapshot + timestamp,
and a client looking up one target downloads only that target's bin."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from repository import hashbins
from repository.create import init_dev
from repository.errors import BadInputError
from repository.manager import OtaRepository
from repository.targetfiles import published_path
from tests.helpers.ceremony import client, use_passphrase
from tests.helpers.repo import assert_one_line_error, ota_repo, published

N_TARGETS = 10_000


def _enable(repo_dir: Path, bins: int) -> None:
    hashbins.enable_now(repo_dir, bins)


@pytest.fixture(scope="module", params=[16, 256], ids=["16-bins", "256-bins"])
def big_repo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int]:
    bins: int = request.param
    mp = pytest.MonkeyPatch()
    use_passphrase(mp)
    base = tmp_path_factory.mktemp(f"bins{bins}")
    init_dev(base / "repo")
    _enable(base / "repo", bins)
    infos = []
    for i in range(N_TARGETS):
        tf = TargetFile.from_data(f"firmware/model-{i % 7}/fw-{i}.bin", f"image {i}".encode())
        stored = published_path(base / "repo" / "targets", tf)
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(f"image {i}".encode())  # as a bulk copy (rsync) would leave them
        infos.append(tf)
    # one publish: each bin edited once, snapshot and timestamp once
    touched = hashbins.add_stored_targets(OtaRepository.load(base / "repo"), infos)
    assert len(touched) == bins
    mp.undo()
    return base / "repo", bins


def test_bins_hold_every_target_in_the_right_bin(big_repo: tuple[Path, int]) -> None:
    repo_dir, bins = big_repo
    repo = OtaRepository.load(repo_dir)
    snapshot = repo.snapshot()
    bin_names = [n.removesuffix(".json") for n in snapshot.meta if n.startswith("bins-")]
    assert len(bin_names) == bins
    total = 0
    for name in bin_names:
        listed = repo.current_metadata(name).signed
        assert isinstance(listed, Targets)
        total += len(listed.targets)
        assert all(repo.role_for_target("targets", p) == name for p in listed.targets)
    assert total == N_TARGETS
    assert len(repo.current_metadata("targets").signed.targets) == 0


def test_one_more_target_re_signs_one_bin_snapshot_and_timestamp(
    big_repo: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_dir, _ = big_repo
    use_passphrase(monkeypatch)
    before = {p.name: p.stat().st_mtime_ns for p in (repo_dir / "metadata").iterdir()}
    src = tmp_path / "new.bin"
    src.write_bytes(b"one more image")
    path = "firmware/model-new/fw-10000.bin"
    OtaRepository.load(repo_dir).add_targets([(src, path, None)])
    after = {p.name: p.stat().st_mtime_ns for p in (repo_dir / "metadata").iterdir()}
    written = sorted(n for n in after if before.get(n) != after[n])
    expected_bin = OtaRepository.load(repo_dir).role_for_target("targets", path)
    assert len(written) == 3, written
    assert written[0].endswith(f".{expected_bin}.json")
    assert written[1].endswith(".snapshot.json")
    assert written[2] == "timestamp.json"


def test_client_fetching_one_target_downloads_only_its_bin(
    big_repo: tuple[Path, int], tmp_path: Path
) -> None:
    repo_dir, _ = big_repo
    root = (repo_dir / "metadata" / "1.root.json").read_bytes()
    updater, fetcher = client(repo_dir, tmp_path / "device", root)
    updater.refresh()
    path = f"firmware/model-{1234 % 7}/fw-1234.bin"
    info = updater.get_targetinfo(path)
    assert info is not None
    updater.download_target(info, str(tmp_path / "fw.bin"))
    assert (tmp_path / "fw.bin").read_bytes() == b"image 1234"
    bins_fetched = [f for f in fetcher.fetched if "bins-" in f]
    expected = OtaRepository.load(repo_dir).role_for_target("targets", path)
    assert len(bins_fetched) == 1 and bins_fetched[0].endswith(f".{expected}.json")


def test_hash_bins_cli_and_refusals(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    before = published(repo)
    assert_one_line_error(ota_repo(repo, "hash-bins", "12", check=False), "power of two")
    assert published(repo) == before
    out = ota_repo(repo, "hash-bins", "16", "--publish").stdout
    assert "hash-bin delegation added: 16 bins" in out
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"fw")
    custom = json.dumps({"firmware": {"version": "1.0.0", "hardware_ids": ["x"]}})
    ota_repo(repo, "add-target", str(fw), "--path", "firmware/x/fw-1.0.0.bin", "--custom", custom)
    ota_repo(repo, "verify")
    before = published(repo)
    proc = ota_repo(
        repo, "delegate", "fw-x", "--paths", "firmware/x/*", "--key",
        str(repo / ".ota" / "keys" / "targets.pub"), check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "hash bins")
    assert published(repo) == before
    status = json.loads(ota_repo(repo, "status", "--json").stdout)["roles"]
    assert sorted(r["role"] for r in status if r["role"].startswith("bins-")) == [
        f"bins-{i:x}" for i in range(16)
    ]
    assert all(r["threshold_met"] for r in status)
    keys_out = ota_repo(repo, "key", "list", "--json").stdout
    assert any("bins-* (16)" in r for row in json.loads(keys_out)["keys"] for r in row["roles"])


def test_bit_length() -> None:
    assert hashbins.bit_length_for(256) == 8
    with pytest.raises(BadInputError):
        hashbins.bit_length_for(1)
    md = Metadata(Targets())
    assert hashbins.bins_to_create(OtaRepository.__new__(OtaRepository), md) == []


def test_refresh_renews_bins_before_they_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_passphrase(monkeypatch)
    init_dev(tmp_path / "repo")
    hashbins.enable_now(tmp_path / "repo", 4)
    assert OtaRepository.load(tmp_path / "repo").refresh() == []
    later = OtaRepository.load(tmp_path / "repo")
    later.now = datetime.now(UTC) + timedelta(days=50)  # past half of the bins' 90 days
    done = later.refresh()
    assert done == ["bins-0", "bins-1", "bins-2", "bins-3", "snapshot", "timestamp"]
    again = OtaRepository.load(tmp_path / "repo")
    again.now = later.now
    assert again.refresh() == []


def test_rotate_the_bins_key(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    ota_repo(repo, "hash-bins", "4", "--publish")
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"fw")
    ota_repo(repo, "add-target", str(fw), "--path", "firmware/x/fw-1.0.0.bin")
    ota_repo(repo, "key", "generate", "bins-2", "--out", str(tmp_path / "keys"))
    new_pub = tmp_path / "keys" / "bins-2.pub"
    ota_repo(
        repo, "rotate", "bins", "--add-key", str(new_pub),
        "--uri", f"encfile:{tmp_path / 'keys' / 'bins-2.key'}", "--publish",
    )  # fmt: skip
    new_keyid = json.loads(new_pub.read_text())["keyid"]
    r = OtaRepository.load(repo)
    for name in ("bins-0", "bins-1", "bins-2", "bins-3"):
        assert list(r.current_metadata(name).signatures) == [new_keyid]
    ota_repo(repo, "verify")
    ota_repo(repo, "add-target", str(fw), "--path", "firmware/x/fw-1.0.1.bin")
    ota_repo(repo, "verify")
