"""Attacks on the device's own files: its cached metadata, a partial download, and the slots
between install and boot (an attacker with brief write access to the storage, or bit rot).

The device must never trust what it did not verify itself: cached metadata is verified again
from the provisioned root, a resumed download is verified as a whole, and a slot's image is
checked against its recorded verified target before every boot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.server import truncate
from tests.attacks.toolkit.simulator import firmware_path
from tests.attacks.toolkit.tamper import (
    flip,
    metadata_cache,
    plant_metadata,
    resume_record,
    rewrite_resume_record,
    wipe_metadata,
    write_private,
)

V2 = firmware_path("model-x", "2.0.0")
IMAGE = "targets/firmware/model-x/*"
NO_UPDATE = {"event": "check", "result": "no-update"}


# -- cached metadata ---------------------------------------------------------------------------


def _forged(lab: Lab) -> dict[str, bytes]:
    """A complete forged view that would offer 9.0.0: every role re-signed by attacker keys,
    including a root v2 that hands all roles to them. Its image is on the mirror too."""
    evil = lab.repo.fork()
    mine = CryptoSigner.generate_ed25519()
    for role in ("root", "targets", "snapshot", "timestamp"):
        for keyid in list(evil.root.roles[role].keyids):
            evil.root.revoke_key(keyid, role)
        evil.root.add_key(mine.public_key, role)
        evil.root.roles[role].threshold = 1
        evil.sign_with[role] = [mine]
    evil.sign_with["firmware-model-x"] = [mine]
    evil.publish_root(signers=[mine])
    path = evil.add_firmware("model-x", "9.0.0", counter=9, salt="evil")
    evil.timestamp.version += 100
    evil.publish()
    lab.repo.files[evil.served_path(path)] = evil.images[path]  # bytes reachable on the mirror
    return {
        "timestamp.json": evil.history["timestamp"][evil.timestamp.version],
        "snapshot.json": evil.history["snapshot"][evil.snapshot.version],
        "targets.json": evil.history["targets"][evil.targets.version],
        "firmware-model-x.json": evil.history["firmware-model-x"][
            evil.delegated["firmware-model-x"].version
        ],
        "root_history/2.root.json": evil.history["root"][2],
    }


TAMPER_CACHE = [
    "forged-timestamp-and-snapshot",
    "forged-delegated-role",
    "forged-next-root",
    "root-link-to-forged-root",
    "deleted-cache",
]


@pytest.mark.parametrize("how", TAMPER_CACHE)
def test_tampered_cached_metadata(lab: Lab, attack: Callable[..., Attempt], how: str) -> None:
    """Cached metadata is replaced by forged files offering 9.0.0. ngclient re-verifies the
    cache from the provisioned root, discards what does not verify and fetches the honest
    metadata again: the device sees no update and its trusted metadata is as before."""
    forged = _forged(lab)
    folder = metadata_cache(lab.device)
    with attack(lab.device, f"tampered cache: {how}") as a:
        if how == "forged-timestamp-and-snapshot":
            plant_metadata(lab.device, {k: forged[k] for k in ("timestamp.json", "snapshot.json")})
        elif how == "forged-delegated-role":
            plant_metadata(
                lab.device, {k: forged[k] for k in ("targets.json", "firmware-model-x.json")}
            )
        elif how == "forged-next-root":
            plant_metadata(
                lab.device, {"root_history/2.root.json": forged["root_history/2.root.json"]}
            )
            # The forged file stays where the attacker put it; the device must not adopt it
            # (root.json still resolves to the provisioned version 1, checked below).
            a.may_change = ("metadata:root_history/2.root.json",)
        elif how == "root-link-to-forged-root":
            plant_metadata(lab.device, {"root.json": forged["root_history/2.root.json"]})
        else:
            wipe_metadata(lab.device)
        out = lab.device.run("update")
        a.ignored(out, check=lambda r: r["result"] == "no-update", event=NO_UPDATE)
    assert (folder / "root.json").resolve().name == "1.root.json"
    assert json.loads((folder / "root.json").read_bytes())["signed"]["version"] == 1
    lab.release("2.0.0")
    lab.recovers("2.0.0")


def test_cache_rolled_back_with_network_replay(lab: Lab, attack: Callable[..., Attempt]) -> None:
    """Local and network attacker together: the device runs 2.0.0 (counter 2); its metadata
    cache is put back to genuine files from before that release, and the mirror replays that
    old repository. TUF's rollback protection lives in that cache, so this is where it ends;
    the firmware policy (installed version, security counter) is the backstop: nothing older
    is installed, even on explicit request."""
    old_view = lab.repo.fork()  # the repository as it was when only 1.0.0 existed
    old_cache = {
        name: (metadata_cache(lab.device) / name).read_bytes()
        for name in ("timestamp.json", "snapshot.json", "targets.json", "firmware-model-x.json")
    }
    lab.release("2.0.0", counter=2)
    assert lab.device.ok("update")["version"] == "2.0.0"
    assert lab.device.ok("boot")["committed"] is True
    lab.server.repo = old_view
    metadata = tuple(f"metadata:{n}" for n in old_cache)  # rewritten by the attacker
    with attack(lab.device, "cache rolled back + replay: automatic", may_change=metadata) as a:
        plant_metadata(lab.device, old_cache)
        a.ignored(
            lab.device.run("update"), check=lambda r: r["result"] == "no-update", event=NO_UPDATE
        )
    v1 = firmware_path("model-x", "1.0.0")
    with attack(lab.device, "cache rolled back + replay: explicit", may_change=metadata) as a:
        out = lab.device.run("update", "--target", v1)
        a.refused(
            out,
            f"refused {v1}: version 1.0.0 is not newer than the installed 2.0.0",
            event={"event": "check", "result": "refused"},
        )
    status = lab.device.status()
    assert (status["installed_version"], status["security_counter"]) == ("2.0.0", 2)


# -- partial downloads -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["slot-bytes", "resume-offset", "resume-offset-at-end"])
def test_tampered_partial_download(lab: Lab, attack: Callable[..., Attempt], how: str) -> None:
    """A download is cut halfway (resumable). Before it resumes, the attacker changes bytes
    already written to the inactive slot, or moves the resume record's offset. The resumed
    image is verified as a whole, refused, and the next attempt starts from zero."""
    size = 1024 * 1024
    lab.release("2.0.0", size=size)
    lab.server.attack(IMAGE, truncate(0.6), times=1)
    cut = lab.device.run("update")
    assert cut.returncode == 1 and "it will resume" in cut.error, cut
    record_path = lab.device.data_dir / "download.json"
    record = resume_record(lab.device)
    assert 0 < record["offset"] < size, record
    if how == "slot-bytes":
        flip(lab.device.slots["B"], record["offset"] // 2)
    elif how == "resume-offset":
        record["offset"] += 4096  # skip bytes that were never written
        rewrite_resume_record(lab.device, offset=record["offset"])
    else:
        record["offset"] = size  # "everything is here already"
        rewrite_resume_record(lab.device, offset=size)
    with attack(lab.device, f"tampered partial download: {how}") as a:
        out = lab.device.run("update")
        a.refused(
            out,
            f"refused {V2}",
            "slot B does not hold",
            event={"event": "verify", "result": "failed"},
        )
    if how != "resume-offset-at-end":  # at the end, nothing is left to fetch
        assert any(r == f"bytes={record['offset']}-" for _, p, r in lab.server.requests), (
            "the tampered download was not resumed"
        )
    assert not record_path.exists()  # never resume onto bytes that did not verify
    lab.recovers("2.0.0")


# -- slots between install and boot ------------------------------------------------------------


def test_tampered_inactive_slot_between_install_and_boot(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """2.0.0 is installed into slot B and waits for its trial boot; the attacker changes B.
    The boot check refuses the trial and stays on A."""
    lab.release("2.0.0")
    assert lab.device.ok("update")["slot"] == "B"
    flip(lab.device.slots["B"], 100)
    with attack(lab.device, may_change=("trial_slot",)) as a:
        out = lab.device.run("boot")
        a.ignored(
            out,
            check=lambda r: (
                r["slot"] == "A"
                and r["rolled_back"]
                and not r["committed"]
                and "trial image does not verify" in r["reason"]
            ),
            event={"event": "rollback", "result": "rolled-back"},
        )
    lab.recovers("2.0.0", boot=True)


@pytest.mark.parametrize("spare", ["no-spare", "verified-spare"])
def test_tampered_active_slot_before_boot(
    lab: Lab, attack: Callable[..., Attempt], spare: str
) -> None:
    """The committed slot's image is changed while the device is off. It is never booted:
    the device falls back to the other slot if that one verifies (and is not below the
    security counter), else it refuses to boot at all."""
    dev = lab.device
    if spare == "verified-spare":
        lab.release("2.0.0")
        assert dev.ok("update")["slot"] == "B"
        assert dev.ok("boot")["committed"] is True
    active = dev.status()["active_slot"]
    original = dev.slots[active].read_bytes()
    flip(dev.slots[active], 200)
    if spare == "no-spare":
        # The attacker's write is the attack; the device must neither boot nor adopt it.
        with attack(dev) as a:
            out = dev.run("boot")
            a.refused(
                out,
                f"no bootable slot: slot {active}",
                f"slot {active} does not hold",
                event={"event": "boot", "result": "failed"},
            )
        write_private(dev.slots[active], original)  # control: the genuine image boots
        assert dev.ok("boot")["slot"] == active
        return
    with attack(dev, may_change=("active_slot", "active_bytes", "installed_version")) as a:
        out = dev.run("boot")
        a.ignored(
            out,
            check=lambda r: (
                r["slot"] == "A"
                and r["rolled_back"]
                and f"committed slot {active} does not verify" in r["reason"]
            ),
            event={"event": "rollback", "result": "rolled-back"},
        )
    status = dev.status()
    assert (status["active_slot"], status["installed_version"]) == ("A", "1.0.0")
    assert dev.slot_holds("A", lab.repo.images[firmware_path("model-x", "1.0.0")])


@pytest.mark.parametrize(
    "how", ["loosened-data-dir", "group-writable-state", "state-linked-out", "foreign-owner-link"]
)
def test_tampered_storage_permissions(
    lab: Lab, attack: Callable[..., Attempt], how: str, tmp_path: Path
) -> None:
    """The data directory is opened to other users, or a state file is replaced by a link to
    a file the attacker controls outside it. The client refuses to work on state it cannot
    trust rather than read or write through it."""
    dev = lab.device
    state = dev.data_dir / "state.json"
    genuine = state.read_bytes()
    outside = tmp_path / "attacker-state.json"
    lab.release("2.0.0")
    # The attempt starts before the tampering and ends after the owner repaired it, so the
    # comparison shows whether the device changed anything while its storage was open.
    with attack(dev, f"storage: {how}") as a:
        if how == "loosened-data-dir":
            dev.data_dir.chmod(0o777)
            expect = f"{dev.data_dir} has mode 0777: must be owner-only"
        elif how == "group-writable-state":
            state.chmod(0o660)
            expect = f"{state} has mode 0660: must be owner-only"
        else:
            outside.write_bytes(genuine)
            outside.chmod(0o600)
            state.unlink()
            state.symlink_to(outside if how == "state-linked-out" else Path("/etc/hostname"))
            expect = f"{state} is a link out of the data directory"
        try:
            out = dev.run("update")
            a.refused(out, expect)
            assert not outside.exists() or outside.read_bytes() == genuine
        finally:
            if state.is_symlink():
                state.unlink()
                write_private(state, genuine)
            dev.data_dir.chmod(0o700)
            state.chmod(0o600)
    lab.recovers("2.0.0")
