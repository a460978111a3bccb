"""Firmware listed by a delegated role per hardware model, next to firmware listed directly in
top-level targets: the device finds both, fetches only its own model's role, and installs the
target ngclient's verified lookup returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ota_device import PASSPHRASE, Lab


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


def test_firmware_in_delegated_roles_and_top_level_targets(lab: Lab) -> None:
    v1 = lab.publish("1.0.0")  # the factory image, in top-level targets
    dev = lab.device(factory=v1)
    lab.delegate("model-x")
    lab.delegate("model-y")
    v2 = lab.publish("2.0.0", role="model-x")
    lab.publish("9.0.0", hwid="model-y", role="model-y")
    lab.server.reset_log()
    check = dev.json("check")
    assert check["candidate"]["target"] == v2
    fetched = [r["path"] for r in lab.server.requests()]
    assert any(p.endswith(".model-x.json") for p in fetched)
    assert not any("model-y" in p for p in fetched), fetched  # only what a lookup needs
    assert dev.json("update")["version"] == "2.0.0"
    assert dev.json("boot")["committed"]
    assert dev.slots["B"].read_bytes() == lab.published[v2]


def test_top_level_firmware_newer_than_delegated(lab: Lab) -> None:
    v1 = lab.publish("1.0.0")
    dev = lab.device(factory=v1)
    lab.delegate("model-x", terminating=False)
    lab.publish("2.0.0", role="model-x")
    v3 = lab.publish("3.0.0")  # directly in top-level targets
    assert dev.json("update")["target"] == v3
    assert dev.json("boot")["version"] == "3.0.0"


def test_server_with_online_keys_cannot_forge_a_delegated_role(lab: Lab) -> None:
    """The server holds snapshot and timestamp keys, not publishers' keys: a model-x role it
    signs itself (with a firmware it wants installed) is refused, and nothing changes."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import MetaFile, TargetFile

    from repository.manager import OtaRepository

    v1 = lab.publish("1.0.0")
    dev = lab.device(factory=v1)
    lab.delegate("model-x")
    lab.publish("1.0.1", role="model-x")
    dev.json("check")
    before = dev.snapshot()

    evil = lab.repo_dir / "targets" / "evil.bin"
    evil.write_bytes(b"GOOD but evil")
    repo = OtaRepository.load(lab.repo_dir)
    with repo.writing("forge"):
        md = repo.open("model-x")
        forged = TargetFile.from_file("firmware/model-x/fw-6.6.6.bin", str(evil))
        forged.unrecognized_fields["custom"] = {
            "firmware": {"version": "6.6.6", "hardware_ids": ["model-x"], "security_counter": 9}
        }
        md.signed.targets[forged.path] = forged
        md.signed.version += 1
        md.signatures.clear()
        md.sign(CryptoSigner.generate_ed25519())
        repo.write("model-x", md)
        repo.targets_infos["model-x.json"] = MetaFile(md.signed.version)
        repo.publish_snapshot_and_timestamp()

    proc = dev.run("update")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "ota-client: error: looking up firmware/model-x/.ota-listing-probe failed: "
        "UnsignedMetadataError: model-x was signed by 0/1 keys"
    ), proc.stderr
    assert dev.run("update", "--target", forged.path).returncode == 1
    after = dev.snapshot()
    assert (
        after["metadata"].items()
        >= {k: v for k, v in before["metadata"].items() if "model-x" in k}.items()
    )
    assert {k: v for k, v in after.items() if k != "metadata"} == {
        k: v for k, v in before.items() if k != "metadata"
    }


def test_firmware_in_hash_bins(lab: Lab) -> None:
    """A publisher's role delegating to hash bins signed by the publisher's key: every bin may
    hold firmware; the client lists all bins (each loaded and verified by ngclient) and
    installs the newest."""
    import subprocess

    from tests.helpers.ota_device import image
    from tests.helpers.repo import BIN, cli_env, ota_repo

    keys = lab.folder / "keys"
    ota_repo(lab.repo_dir, "key", "generate", "pub-x", "--out", str(keys))
    uri = f"encfile:{keys / 'pub-x.key'}"
    ota_repo(
        lab.repo_dir, "delegate", "model-x", "--paths", "firmware/model-x/*",
        "--key", str(keys / "pub-x.pub"), "--bins", "8", "--sign-with", uri, "--publish",
    )  # fmt: skip
    v1 = lab.publish("1.0.0")  # the factory image, in top-level targets
    dev = lab.device(factory=v1)
    for version in ("2.0.0", "3.0.0"):
        src = lab.folder / f"fw-{version}.bin"
        src.write_bytes(image(version))
        subprocess.run(
            [
                str(BIN / "ota-publish"), "add", str(src), "--hwid", "model-x",
                "--version", version, "--role", "model-x", "--key", uri,
                "--repo", str(lab.repo_dir),
            ],
            env=cli_env(), check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    lab.publish("4.0.0", hwid="model-y")
    assert dev.json("update")["target"] == "firmware/model-x/fw-3.0.0.bin"
    assert dev.json("boot")["version"] == "3.0.0"
    assert dev.slots["B"].read_bytes() == image("3.0.0")
    lab.server.reset_log()
    assert dev.json("check")["update_available"] is False
    assert len(lab.server.requests()) == 2  # unchanged bins come from the verified cache
