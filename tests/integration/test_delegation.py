"""Delegations to publishers: publish inside the delegation, refusals outside it (by ota-publish
and by a real client when forced onto the server), revocation of a compromised publisher key."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, TargetFile, Targets

from repository import keys
from repository.delegations import validate_delegated_update
from repository.errors import ThresholdError
from repository.manager import OtaRepository
from tests.helpers.ceremony import Ceremony, client, production_repo, use_passphrase
from tests.helpers.repo import (
    BIN,
    assert_one_line_error,
    cli_env,
    ota_repo,
    published,
    sign_request,
)

ROLE = "firmware-model-x"


def ota_publish(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(BIN / "ota-publish"), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ota-publish {' '.join(args)} failed: {proc.stderr}")
    return proc


def _publish_request(c: Ceremony, *holders: str) -> None:
    (req,) = json.loads(ota_repo(c.repo_dir, "requests", "--json").stdout)["requests"]
    for holder in holders:
        sign_request(c.repo_dir, req["id"], c.uri(holder))
    ota_repo(c.repo_dir, "publish", req["id"])


def _add(
    c: Ceremony,
    tmp: Path,
    version: str,
    *,
    key: str = "pub-x",
    hwid: str = "model-x",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    image = tmp / f"image-{version}.bin"
    image.write_bytes(f"firmware {version} for {hwid}".encode() * 100)
    return ota_publish(
        "add", str(image), "--hwid", hwid, "--version", version, "--role", ROLE,
        "--key", c.uri(key), "--repo", str(c.repo_dir), check=check,
    )  # fmt: skip


@pytest.fixture
def c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ceremony:
    """Production repository delegating firmware/model-x/* to the publisher key pub-x."""
    use_passphrase(monkeypatch)
    ceremony = production_repo(tmp_path)
    ceremony.new_key("pub-x")
    ota_repo(
        ceremony.repo_dir, "delegate", ROLE, "--paths", "firmware/model-x/*",
        "--key", str(ceremony.pub("pub-x")), "--threshold", "1", "--terminating",
        "--sign-with", ceremony.uri("pub-x"),
    )  # fmt: skip
    _publish_request(ceremony, "release")
    return ceremony


def _lookup(c: Ceremony, tmp: Path, path: str) -> TargetFile | None:
    root = (c.repo_dir / "metadata" / "1.root.json").read_bytes()
    updater, _ = client(c.repo_dir, tmp, root)
    updater.refresh()
    return updater.get_targetinfo(path)


def _force_role(c: Ceremony, signer_name: str, edit: dict[str, TargetFile]) -> None:
    """What a compromised server could do: write a role version that skipped every check."""
    repo = OtaRepository.load(c.repo_dir)
    with repo.writing("forced"):
        md = repo.open(ROLE)
        md.signed.version += 1
        md.signed.targets.update(edit)
        md.signatures.clear()
        key = keys.public_key_from_file(c.pub(signer_name))
        md.sign(keys.load_signer(c.uri(signer_name), key))
        repo.write(ROLE, md)
        repo.publish_snapshot_and_timestamp()


def test_publisher_adds_image_and_delta_a_client_verifies(c: Ceremony, tmp_path: Path) -> None:
    _add(c, tmp_path, "1.4.1")
    image = tmp_path / "fw-1.4.2.bin"
    image.write_bytes(b"new image" * 1000)
    delta = tmp_path / "delta"
    delta.write_bytes(b"delta bytes")
    out = ota_publish(
        "add", str(image), "--hwid", "model-x", "--version", "1.4.2", "--security-counter", "3",
        "--delta-from", "1.4.1", str(delta), "--role", ROLE, "--key", c.uri("pub-x"),
        "--repo", str(c.repo_dir), "--json",
    )  # fmt: skip
    assert json.loads(out.stdout)["version"] == 3  # v1 came with the delegation, empty
    info = _lookup(c, tmp_path / "device", "firmware/model-x/fw-1.4.2.bin")
    assert info is not None
    assert info.custom == {
        "firmware": {
            "version": "1.4.2",
            "hardware_ids": ["model-x"],
            "security_counter": 3,
            "deltas": {"1.4.1": "firmware/model-x/fw-1.4.1-to-1.4.2.delta"},
        }
    }
    assert _lookup(c, tmp_path / "d2", "firmware/model-x/fw-1.4.1-to-1.4.2.delta") is not None
    ota_repo(c.repo_dir, "verify")


def test_target_outside_delegation_refused_at_publish_and_by_client(
    c: Ceremony, tmp_path: Path
) -> None:
    _add(c, tmp_path, "1.0.0")
    before = published(c.repo_dir)
    proc = _add(c, tmp_path, "1.0.0", hwid="model-y", check=False)
    assert_one_line_error(proc, "outside firmware-model-x's delegation", "before signing")
    assert published(c.repo_dir) == before

    # Forced onto the server, signed by the publisher: the client never trusts it.
    evil = TargetFile.from_data("firmware/model-y/fw-9.9.9.bin", b"evil", ["sha256"])
    _force_role(c, "pub-x", {evil.path: evil})
    assert _lookup(c, tmp_path / "device", evil.path) is None
    # ... while the delegated path still resolves.
    assert _lookup(c, tmp_path / "d2", "firmware/model-x/fw-1.0.0.bin") is not None


def test_revoked_publisher_key_cannot_publish_and_runbook_recovers(
    c: Ceremony, tmp_path: Path
) -> None:
    # docs/runbooks/key-compromise.md, "A publisher key": the stolen key published bad firmware.
    _add(c, tmp_path, "1.0.0")
    _add(c, tmp_path, "6.6.6")  # the attacker's image, signed with the stolen key
    c.new_key("pub-x-2")
    ota_repo(
        c.repo_dir, "rotate", ROLE, "--remove-key", c.key("pub-x").keyid,
        "--add-key", str(c.pub("pub-x-2")), "--clear-targets",
        "--sign-with", c.uri("pub-x-2"),
    )  # fmt: skip
    _publish_request(c, "release")
    assert _lookup(c, tmp_path / "d0", "firmware/model-x/fw-6.6.6.bin") is None

    before = published(c.repo_dir)
    proc = _add(c, tmp_path, "6.6.7", check=False)
    assert_one_line_error(proc, "is not one of this role's keys")
    assert published(c.repo_dir) == before

    evil = TargetFile.from_data("firmware/model-x/fw-6.6.7.bin", b"evil", ["sha256"])
    # The upload check (what the server runs) refuses the old key's signature too.
    repo = OtaRepository.load(c.repo_dir)
    upload = repo.open(ROLE)
    upload.signed.version += 1
    upload.signed.targets[evil.path] = evil
    upload.signatures.clear()
    upload.sign(keys.load_signer(c.uri("pub-x"), c.key("pub-x")))
    with pytest.raises(ThresholdError, match="not signed by enough keys"):
        validate_delegated_update(repo, ROLE, upload)
    _force_role(c, "pub-x", {evil.path: evil})
    with pytest.raises(UnsignedMetadataError):
        _lookup(c, tmp_path / "d1", evil.path)

    # The publisher never signs on top of what the old key forced in; the security team resets
    # the role (runbook step 3), then the publisher re-publishes: devices update again.
    proc = _add(c, tmp_path, "1.0.1", key="pub-x-2", check=False)
    assert_one_line_error(proc, "is not signed by the keys its delegation lists")
    ota_repo(c.repo_dir, "rotate", ROLE, "--clear-targets", "--sign-with", c.uri("pub-x-2"))
    _publish_request(c, "release")
    _add(c, tmp_path, "1.0.1", key="pub-x-2")
    info = _lookup(c, tmp_path / "d2", "firmware/model-x/fw-1.0.1.bin")
    assert info is not None
    assert _lookup(c, tmp_path / "d3", evil.path) is None
    ota_repo(c.repo_dir, "verify")


def test_revoked_delegation_stops_counting(c: Ceremony, tmp_path: Path) -> None:
    _add(c, tmp_path, "1.0.0")
    ota_repo(c.repo_dir, "revoke", ROLE)
    _publish_request(c, "release")
    assert _lookup(c, tmp_path / "device", "firmware/model-x/fw-1.0.0.bin") is None
    proc = _add(c, tmp_path, "1.0.1", check=False)
    assert_one_line_error(proc, "unknown role 'firmware-model-x'")


def test_verify_passes_after_a_revocation(c: Ceremony, tmp_path: Path) -> None:
    _add(c, tmp_path, "1.0.0")
    ota_repo(c.repo_dir, "revoke", ROLE)
    _publish_request(c, "release")
    ota_repo(c.repo_dir, "verify")


def test_overlapping_patterns_warn(c: Ceremony) -> None:
    c.new_key("pub-all")
    proc = ota_repo(
        c.repo_dir, "delegate", "firmware-all", "--paths", "firmware/*/*",
        "--key", str(c.pub("pub-all")),
    )  # fmt: skip
    assert "firmware-all: new role" in proc.stdout
    assert "warning: firmware-all path firmware/*/* overlaps firmware-model-x" in proc.stderr


def test_publisher_metadata_is_the_exact_next_version(c: Ceremony, tmp_path: Path) -> None:
    _add(c, tmp_path, "1.0.0")
    md = Metadata[Targets].from_bytes((c.repo_dir / "metadata" / f"2.{ROLE}.json").read_bytes())
    repo = OtaRepository.load(c.repo_dir)
    replay = copy.deepcopy(md)
    with pytest.raises(Exception, match="version 2 does not follow the published v2"):
        validate_delegated_update(repo, ROLE, replay)
