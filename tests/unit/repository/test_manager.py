"""The manager through the library: lifecycle, write order, recovery after an interrupted writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repository import audit, keys
from repository.create import init_dev
from repository.delegations import validate_delegated_update
from repository.errors import BadInputError, CorruptRepositoryError
from repository.manager import OtaRepository
from repository.verify import verify_repository
from tests.helpers.repo import PASSPHRASE, firmware_custom


@pytest.fixture
def repo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    keys.forget_secrets()
    init_dev(tmp_path / "repo")
    return tmp_path / "repo"


def _fw(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def test_library_lifecycle(repo_dir: Path, tmp_path: Path) -> None:
    repo = OtaRepository.load(repo_dir)
    (tf,) = repo.add_targets(
        [(_fw(tmp_path, "a", b"A" * 100), "firmware/m/fw-1.0.0.bin", firmware_custom("1.0.0"))]
    )
    assert tf.custom == firmware_custom("1.0.0")
    repo.add_targets(
        [
            (_fw(tmp_path, "b", b"B"), "firmware/m/fw-2.0.0.bin", None),
            (_fw(tmp_path, "c", b"C"), "firmware/m/fw-3.0.0.bin", None),
        ]
    )
    # one publish of two files is one targets version
    assert repo.targets().version == 3
    repo.remove_targets(["firmware/m/fw-1.0.0.bin"])
    assert sorted(repo.targets().targets) == ["firmware/m/fw-2.0.0.bin", "firmware/m/fw-3.0.0.bin"]
    assert verify_repository(repo_dir).targets_checked == 2
    report = audit.verify(repo.paths.audit, repo.timestamp().version)
    assert report.ok, report.problems
    actions = [e["action"] for e in audit.read_entries(repo.paths.audit)]
    assert actions == ["init", "add-target", "add-target", "remove-target"]


def test_bad_path_in_a_batch_publishes_nothing(repo_dir: Path, tmp_path: Path) -> None:
    repo = OtaRepository.load(repo_dir)
    good = _fw(tmp_path, "a", b"A")
    with pytest.raises(BadInputError):
        repo.add_targets([(good, "firmware/m/ok.bin", None), (good, "../escape", None)])
    assert not (repo_dir / "targets" / "firmware").exists()
    assert OtaRepository.load(repo_dir).timestamp().version == 1


def test_a_versioned_file_left_by_a_killed_writer_is_never_rewritten(
    repo_dir: Path, tmp_path: Path
) -> None:
    # a writer killed after writing 2.targets.json but before the snapshot that names it: a
    # cache may hold those bytes, so the next publish takes the next free version
    (repo_dir / "metadata" / "2.targets.json").write_text("partial garbage")
    repo = OtaRepository.load(repo_dir)
    assert repo.targets().version == 1  # the published state ignores the orphan
    repo.add_targets([(_fw(tmp_path, "a", b"A"), "firmware/m/a.bin", None)])
    verify_repository(repo_dir)
    assert (repo_dir / "metadata" / "2.targets.json").read_text() == "partial garbage"
    data = json.loads((repo_dir / "metadata" / "3.targets.json").read_text())
    assert "firmware/m/a.bin" in data["signed"]["targets"]


def test_an_unaudited_publish_is_recorded_by_the_next_writer(
    repo_dir: Path, tmp_path: Path
) -> None:
    log = repo_dir / ".ota" / "audit.log"
    OtaRepository.load(repo_dir).add_targets([(_fw(tmp_path, "a", b"A"), "firmware/a", None)])
    # the writer was killed after timestamp.json, before its audit line
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))
    assert not audit.verify(log, 2).ok
    OtaRepository.load(repo_dir).add_targets([(_fw(tmp_path, "b", b"B"), "firmware/b", None)])
    entries = audit.read_entries(log)
    assert [e["action"] for e in entries] == ["init", "recovered", "add-target"]
    assert audit.verify(log, 3).ok


def test_corrupted_published_metadata_is_reported(repo_dir: Path) -> None:
    (repo_dir / "metadata" / "1.snapshot.json").write_text("{")
    with pytest.raises(CorruptRepositoryError, match=r"1\.snapshot\.json"):
        OtaRepository.load(repo_dir).snapshot()


def test_a_targets_hash_bin_is_never_accepted_as_a_publisher_upload(repo_dir: Path) -> None:
    """A repository made with the former layout (targets delegating to online-keyed bins):
    a bin upload is refused, naming the migration."""
    from tuf.api.metadata import Delegations, Metadata, SuccinctRoles, Targets

    repo = OtaRepository.load(repo_dir)
    with repo.writing("bins"):
        with repo.edit_targets() as targets:
            bins = SuccinctRoles([], 1, 2, "bins")
            targets.delegations = Delegations(keys={}, roles=None, succinct_roles=bins)
        repo.publish_snapshot_and_timestamp()
    repo = OtaRepository.load(repo_dir)
    forged = Metadata(Targets(version=2))
    with pytest.raises(BadInputError, match=r"online key.*hash-bins --off"):
        validate_delegated_update(repo, "bins-0", forged)
