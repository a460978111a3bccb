"""Hash bins and the server's keys: whoever holds every online key (snapshot, timestamp) and
write access to the server's repository folder cannot make a device install firmware, with bins
on. Bins hang under each publisher's role and are signed by the publisher's keys, so a bin,
the publisher's role or targets written by the attacker are refused by the real `ota-client`,
and the device keeps its firmware and its trusted bins.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Delegations, Metadata, SuccinctRoles

from tests.attacks.toolkit.ceremony_tamper import (
    FolderSource,
    evil_image,
    image,
    private_signer,
    publish_behind,
)
from tests.attacks.toolkit.device import LabDevice
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.server import AttackServer
from tests.helpers.ceremony import Ceremony, production_repo, use_passphrase
from tests.helpers.certs import TlsFiles
from tests.helpers.repo import (
    BIN,
    assert_one_line_error,
    cli_env,
    firmware_custom,
    ota_repo,
    published,
)

V1 = "firmware/model-x/fw-1.0.0.bin"
EVIL = "firmware/model-x/fw-6.6.6.bin"
EVIL_FILES = {EVIL: (evil_image("6.6.6"), firmware_custom("6.6.6", counter=1))}
BINS = 4
FAILED_CHECK = {"event": "check", "result": "failed"}
# What the attacker signs with the online keys is new to the device and rightly trusted.
ONLINE = ("metadata:timestamp.json", "metadata:snapshot.json")


def bin_of(path: str) -> str:
    return str(
        SuccinctRoles([], 1, BINS.bit_length() - 1, "model-x-bins").get_role_for_target(path)
    )


def ota_publish(*args: str) -> None:
    import subprocess

    proc = subprocess.run(
        [str(BIN / "ota-publish"), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Ceremony:
    """A production repository whose model-x publisher's role delegates to 4 hash bins signed
    by the publisher's key, with 1.0.0 published into its bin by `ota-publish`."""
    mp = pytest.MonkeyPatch()
    use_passphrase(mp)
    try:
        c = production_repo(tmp_path_factory.mktemp("hashbin-attacks"))
        c.new_key("publisher")
    finally:
        mp.undo()
    ota_repo(
        c.repo_dir, "delegate", "model-x", "--paths", "firmware/model-x/*",
        "--key", str(c.pub("publisher")), "--bins", str(BINS), "--sign-with", c.uri("release"),
        "--sign-with", c.uri("publisher"), "--publish",
    )  # fmt: skip
    src = c.repo_dir.parent / "fw-1.0.0.bin"
    src.write_bytes(image("1.0.0"))
    ota_publish(
        "add", str(src), "--hwid", "model-x", "--version", "1.0.0", "--security-counter", "1",
        "--role", "model-x", "--key", c.uri("publisher"), "--repo", str(c.repo_dir),
    )  # fmt: skip
    assert (c.repo_dir / "metadata" / f"2.{bin_of(V1)}.json").exists()
    return c


@dataclass
class Fleet:
    repo: Path
    keys: Path
    device: LabDevice

    def signer(self, name: str) -> CryptoSigner:
        return private_signer(self.keys, name)


@pytest.fixture
def fleet(template: Ceremony, tmp_path: Path, tls_files: TlsFiles) -> Iterator[Fleet]:
    """A copy of the repository served as it is on disk, and a model-x device running 1.0.0."""
    repo = tmp_path / "repo"
    shutil.copytree(template.repo_dir, repo)
    server = AttackServer(FolderSource(repo), tls_files.server_cert, tls_files.server_key)
    server.start()
    try:
        device = LabDevice.create(
            tmp_path / "device",
            server_url=server.url,
            ca_cert=tls_files.ca_cert,
            trusted_root=(repo / "metadata" / "1.root.json").read_bytes(),
        )
        device.provision(V1, image("1.0.0"))
        yield Fleet(repo, template.keys_dir, device)
    finally:
        server.stop()


def _online_bins(fleet: Fleet) -> Callable[[Metadata[Any]], None]:
    """The edit: a delegation of every path to bins keyed with the online snapshot key."""
    key = fleet.signer("snapshot").public_key

    def edit(md: Metadata[Any]) -> None:
        succinct = SuccinctRoles([key.keyid], 1, BINS.bit_length() - 1, "model-x-bins")
        md.signed.delegations = Delegations(keys={key.keyid: key}, succinct_roles=succinct)

    return edit


def test_device_installs_firmware_from_its_publishers_bin(fleet: Fleet) -> None:
    """Control: the publisher's 2.0.0, published by `ota-publish` into its bin, installs."""
    src = fleet.repo.parent / "fw-2.0.0.bin"
    src.write_bytes(image("2.0.0"))
    ota_publish(
        "add", str(src), "--hwid", "model-x", "--version", "2.0.0", "--security-counter", "1",
        "--role", "model-x", "--key", f"encfile:{fleet.keys / 'publisher.key'}",
        "--repo", str(fleet.repo),
    )  # fmt: skip
    assert fleet.device.ok("update")["version"] == "2.0.0"


@pytest.mark.parametrize(
    "written", ["bin", "publisher-role", "targets"], ids=["bin", "publisher-role", "targets"]
)
def test_online_keys_cannot_approve_firmware_through_hash_bins(
    fleet: Fleet, attack: Callable[..., Attempt], written: str
) -> None:
    """Server shell with every online key: the attacker lists an evil image in the bin its path
    falls in, in the publisher's role re-pointed at bins keyed with the snapshot key, or in
    targets, signs that role with the snapshot key, then snapshot and timestamp."""
    role = {"bin": bin_of(EVIL), "publisher-role": "model-x", "targets": "targets"}[written]
    fleet.device.ok("check")  # the device holds the honest bins before the attack
    with attack(fleet.device, f"online keys write {written}", may_change=ONLINE) as a:
        publish_behind(
            fleet.repo,
            role=role,
            role_signer=fleet.signer("snapshot"),
            snapshot_signer=fleet.signer("snapshot"),
            timestamp_signer=fleet.signer("timestamp"),
            files=EVIL_FILES,
        )
        if written == "publisher-role":  # and then the bin, signed by the key it now names
            md = Metadata.from_bytes((fleet.repo / "metadata" / "2.model-x.json").read_bytes())
            _online_bins(fleet)(md)
            md.signatures.clear()
            md.sign(fleet.signer("snapshot"))
            (fleet.repo / "metadata" / "2.model-x.json").write_bytes(md.to_bytes())
        a.refused(
            fleet.device.run("update"),
            "UnsignedMetadataError",
            f"{role} was signed by 0/1 keys",
            event=FAILED_CHECK,
        )
    assert fleet.device.status()["installed_version"] == "1.0.0"
    assert not fleet.device.slot_holds("B", evil_image("6.6.6"))


def test_bins_signed_by_an_online_key_are_refused(fleet: Fleet) -> None:
    """The former layout (targets delegating every path to bins signed by the snapshot key)
    cannot be set up, at init or later, and a publisher's bins cannot be re-keyed to it."""
    before = published(fleet.repo)
    for args in (
        ("hash-bins", "4", "--sign-with", f"encfile:{fleet.keys / 'release.key'}", "--publish"),
        ("rotate", "bins", "--add-key", str(fleet.keys / "snapshot.pub")),
    ):
        proc = ota_repo(fleet.repo, *args, check=False)
        assert_one_line_error(proc, "online key")
    assert published(fleet.repo) == before
    proc = ota_repo(fleet.repo.parent / "new", "init", "--dev", "--hash-bins", "4", check=False)
    assert_one_line_error(proc, "online key")
    assert not (fleet.repo.parent / "new" / "metadata").exists()


def test_publisher_role_delegating_to_online_keyed_bins_is_refused(fleet: Fleet) -> None:
    """A staged request whose publisher's role names bins keyed with the snapshot key (the
    attacker edits `delegate`'s request before the holders sign) is never published."""
    from tests.attacks.toolkit.ceremony_tamper import change, restage

    release = f"encfile:{fleet.keys / 'release.key'}"
    ota_repo(fleet.repo, "revoke", "model-x", "--sign-with", release, "--publish")
    staged = fleet.repo / ".ota" / "staging"
    ota_repo(
        fleet.repo, "delegate", "model-y", "--paths", "firmware/model-y/*",
        "--key", str(fleet.keys / "publisher.pub"), "--bins", "2",
    )  # fmt: skip
    (req,) = [p.stem for p in staged.glob("*.json")]
    key = fleet.signer("snapshot").public_key

    def edit(obj: dict[str, Any]) -> None:
        bins = change(obj, "model-y")["delegations"]
        bins["keys"] = {key.keyid: key.to_dict()}
        bins["succinct_roles"]["keyids"] = [key.keyid]

    forged = restage(fleet.repo, req, edit)
    before = published(fleet.repo)
    shown = ota_repo(fleet.repo, "request", "show", forged).stdout
    (digest,) = [ln.split()[-1] for ln in shown.splitlines() if ln.startswith("content hash:")]
    for uri in ("release", "publisher", "snapshot"):  # the holders sign what they are shown
        proc = ota_repo(
            fleet.repo, "sign", forged, "--key", f"encfile:{fleet.keys / uri}.key",
            "--expect", digest, check=False,
        )  # fmt: skip
        assert "Traceback" not in proc.stderr
    proc = ota_repo(fleet.repo, "publish", forged, check=False)
    assert_one_line_error(proc, "own keys")
    assert published(fleet.repo) == before
