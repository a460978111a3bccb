"""Attacks on the metadata path: each named after the threat, each against the real device.

A network attacker controls every byte the device receives (`lab.server`); some attackers also
hold stolen keys (the server's online snapshot/timestamp keys, or keys below a threshold). The
device must refuse with one clear line, log it, and keep its firmware and trusted metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.server import serve_bytes
from tests.attacks.toolkit.simulator import firmware_path

ONLINE = ("metadata:timestamp.json", "metadata:snapshot.json")
FAILED_CHECK = {"event": "check", "result": "failed"}
X9 = firmware_path("model-x", "9.0.0")
NO_UPDATE = {"event": "check", "result": "no-update"}


# -- arbitrary software ------------------------------------------------------------------------


def test_arbitrary_software_in_metadata_signed_by_attacker_keys(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """The server's online keys are stolen; the attacker lists its own firmware for model-x in
    a firmware-model-x role signed by keys it made itself."""
    evil = lab.repo.fork()
    evil.sign_with["firmware-model-x"] = [CryptoSigner.generate_ed25519() for _ in range(2)]
    evil.add_firmware("model-x", "9.0.0", counter=9, salt="evil")
    evil.publish()
    lab.server.repo = evil
    with attack(lab.device, may_change=ONLINE) as a:
        out = lab.device.run("update")
        a.refused(
            out,
            "UnsignedMetadataError: firmware-model-x was signed by 0/2 keys",
            event=FAILED_CHECK,
        )
    lab.release("2.0.0")
    lab.recovers("2.0.0")


# -- rollback of each metadata role ------------------------------------------------------------

ROLLBACK_ROLES = ["timestamp", "snapshot", "targets", "firmware-model-x", "root"]


@pytest.mark.parametrize("role", ROLLBACK_ROLES)
def test_rollback_attack(lab: Lab, attack: Callable[..., Attempt], role: str) -> None:
    """The device trusts newer metadata; the attacker serves an older, validly signed version
    of one role (for snapshot and below it also holds the online keys to point at it)."""
    lab.repo.publish(force=["targets", "firmware-model-x"])
    lab.repo.publish_root()
    assert lab.device.ok("check")["update_available"] is False
    evil = lab.repo.fork()
    may_change: tuple[str, ...] = ()
    trusted = {
        "timestamp": lab.repo.timestamp.version,
        "snapshot": lab.repo.snapshot.version,
        "targets": lab.repo.targets.version,
        "root": lab.repo.root.version,
        "firmware-model-x": lab.repo.delegated["firmware-model-x"].version,
    }[role]
    if role == "timestamp":
        old = lab.repo.history["timestamp"][1]
        lab.server.attack("metadata/timestamp.json", serve_bytes(old))
        expect = f"New timestamp version 1 must be >= {trusted}"
    elif role == "root":
        old = lab.repo.history["root"][1]
        lab.server.attack(f"metadata/{trusted + 1}.root.json", serve_bytes(old))
        expect = f"Expected root version {trusted + 1} instead got version 1"
    elif role == "snapshot":
        evil.timestamp.snapshot_meta = MetaFile(1)
        evil.publish_timestamp()
        lab.server.repo = evil
        expect = f"New snapshot version must be >= {trusted}, got version 1"
    else:
        evil.snapshot.meta[f"{role}.json"] = MetaFile(1)
        evil.publish()
        lab.server.repo = evil
        may_change = ("metadata:timestamp.json",)  # signed with the stolen timestamp key
        # (python-tuf words it with the numbers swapped: new version first, trusted second)
        expect = f"Expected {role}.json version 1, got {trusted}"
    with attack(lab.device, f"rollback of {role}", may_change=may_change) as a:
        out = lab.device.run("update")
        a.refused(out, "BadVersionNumberError", expect, event=FAILED_CHECK)


# -- indefinite freeze -------------------------------------------------------------------------
#
# The repository signs with normal lifetimes and no test waits: only the device's clock moves
# (`run(..., ahead=...)` starts the real `ota-client` under libfaketime, `toolkit/clock.py`),
# while the server, the repository and this process keep real time.

LIFETIMES = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "firmware-model-x": timedelta(days=90),
    "firmware-model-y": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}


def normal_lifetimes(lab: Lab, short: dict[str, timedelta] | None = None) -> None:
    """The honest repository re-signs every role with `LIFETIMES` (`short` overrides some),
    and the device (on the real clock) takes it all: no update, nothing hidden yet."""
    lab.repo.expiry.update({**LIFETIMES, **(short or {})})
    lab.repo.publish_root()
    lab.repo.publish(force=["targets", *lab.repo.delegated])
    assert lab.device.ok("check")["update_available"] is False
    for role in ("root", "targets", "firmware-model-x", "snapshot", "timestamp"):
        assert trusted_lifetime(lab, role) == lab.repo.expiry[role], role


def trusted_lifetime(lab: Lab, role: str) -> timedelta:
    """How long after now the device's cached `role` expires (within a second or two)."""
    md = Metadata.from_bytes((lab.device.data_dir / "metadata" / f"{role}.json").read_bytes())
    left = md.signed.expires - lab.repo.now()
    return timedelta(seconds=round(left.total_seconds() / 60) * 60)  # to the minute


def test_indefinite_freeze_attack(lab: Lab, attack: Callable[..., Attempt]) -> None:
    """The attacker keeps serving the last timestamp the device saw, hiding a new release.
    The device may not notice while that timestamp is valid (1 day), but once its clock is
    past the expiry it refuses instead of trusting stale metadata."""
    normal_lifetimes(lab)
    frozen = lab.repo.fork()
    lab.release("2.0.0")  # hidden from the device by the freeze below
    lab.server.repo = frozen
    with attack(lab.device, "freeze while the stale timestamp is still valid (+23 h)") as a:
        a.ignored(
            lab.device.run("check", ahead=timedelta(hours=23)),
            check=lambda r: r["update_available"] is False,
            event=NO_UPDATE,
        )
    with attack(lab.device) as a:
        out = lab.device.run("update", ahead=timedelta(days=1, hours=1))
        a.refused(out, "ExpiredMetadataError", "timestamp.json is expired", event=FAILED_CHECK)
    lab.recovers("2.0.0")


def test_freeze_attack_with_stolen_timestamp_key(lab: Lab, attack: Callable[..., Attempt]) -> None:
    """The attacker holds the timestamp key: it keeps signing fresh timestamps that point at
    the snapshot the device already has, hiding every release. The freeze still ends when that
    snapshot expires (7 days): a device 8 days ahead refuses, however fresh the timestamp."""
    normal_lifetimes(lab)
    frozen = lab.repo.fork()
    lab.release("2.0.0")  # hidden from the device by the freeze below
    lab.server.repo = frozen
    ahead = timedelta(days=8)
    # fresh on the device's clock, validly signed with the stolen key
    frozen.publish_timestamp(expires=frozen.now() + ahead + LIFETIMES["timestamp"])
    with attack(
        lab.device,
        "freeze with fresh timestamps while the snapshot is still valid (+6 d)",
        may_change=("metadata:timestamp.json",),
    ) as a:
        a.ignored(
            lab.device.run("check", ahead=timedelta(days=6)),
            check=lambda r: r["update_available"] is False,
            event=NO_UPDATE,
        )
    with attack(lab.device, may_change=("metadata:timestamp.json",)) as a:
        out = lab.device.run("update", ahead=ahead)
        a.refused(out, "ExpiredMetadataError", "snapshot.json is expired", event=FAILED_CHECK)
    lab.recovers("2.0.0")


LONG_LIVED = {
    "root": "Final root.json is expired",
    "targets": "New targets is expired",
    "firmware-model-x": "New firmware-model-x is expired",
}


@pytest.mark.parametrize("role", list(LONG_LIVED))
def test_freeze_attack_on_long_lived_role(
    lab: Lab, attack: Callable[..., Attempt], role: str
) -> None:
    """The attacker holds both online keys: it signs fresh timestamps and snapshots for as
    long as it likes, all pointing at the root, targets and delegated role the device already
    has, so no release ever shows. Only the offline roles' expiry ends that freeze: here
    `role` lives 30 days, and a device whose clock is 5 weeks ahead refuses it while the
    timestamp and snapshot in front of it are fresh."""
    normal_lifetimes(lab, {role: timedelta(days=30)})
    frozen = lab.repo.fork()
    lab.release("2.0.0")  # hidden from the device by the freeze below
    lab.server.repo = frozen
    ahead = timedelta(weeks=5)
    # timestamp and snapshot fresh on the device's clock, signed with the stolen online keys
    frozen.expiry["timestamp"] = ahead + LIFETIMES["timestamp"]
    frozen.expiry["snapshot"] = ahead + LIFETIMES["snapshot"]
    frozen.publish()
    with attack(
        lab.device, f"freeze of {role} while it is still valid (+3 weeks)", may_change=ONLINE
    ) as a:
        a.ignored(
            lab.device.run("check", ahead=timedelta(weeks=3)),
            check=lambda r: r["update_available"] is False,
            event=NO_UPDATE,
        )
    with attack(lab.device, f"freeze of {role} past its expiry (+5 weeks)") as a:
        out = lab.device.run("update", ahead=ahead)
        a.refused(out, "ExpiredMetadataError", LONG_LIVED[role], event=FAILED_CHECK)
    lab.recovers("2.0.0")


def test_freeze_attack_with_metadata_expired_when_served(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """A fresh device meets a mirror frozen long ago: every file is validly signed, but the
    timestamp's expiry is in the past."""
    stale = lab.repo.fork()
    stale.publish(expires={"timestamp": stale.now() - timedelta(days=30)})
    lab.server.repo = stale
    with attack(lab.device) as a:
        out = lab.device.run("check")
        a.refused(out, "ExpiredMetadataError", "timestamp.json is expired", event=FAILED_CHECK)


# -- mix and match -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["firmware-model-x", "snapshot"])
def test_mix_and_match_attack(lab: Lab, attack: Callable[..., Attempt], role: str) -> None:
    """The attacker (no keys) serves the current timestamp with an older, validly signed
    version of one role under the name the new snapshot asks for."""
    lab.release("2.0.0")
    current = (
        lab.repo.snapshot.version if role == "snapshot" else (lab.repo.delegated[role].version)
    )
    old = lab.repo.history[role][current - 1]
    lab.server.attack(f"metadata/{current}.{role}.json", serve_bytes(old))
    # The honest timestamp (and for the delegated role, the snapshot) is new to the device.
    may_change = ("metadata:timestamp.json",) + (
        ("metadata:snapshot.json",) if role != "snapshot" else ()
    )
    with attack(lab.device, may_change=may_change) as a:
        out = lab.device.run("update")
        a.refused(
            out,
            "BadVersionNumberError",
            f"Expected {role} v{current}, got v{current - 1}"
            if role != "snapshot"
            else f"Expected snapshot version {current}, got {current - 1}",
            event=FAILED_CHECK,
        )
    lab.recovers("2.0.0")


# -- fast-forward attack and recovery ----------------------------------------------------------


@pytest.mark.parametrize("role", ["timestamp", "snapshot"])
def test_fast_forward_attack_recovery(lab: Lab, attack: Callable[..., Attempt], role: str) -> None:
    """Stolen online keys sign a huge version number; the device trusts it and then refuses
    every honest version below it. Rotating the stolen role's keys in a new root recovers the
    fleet: the fast-forwarded metadata no longer verifies and is discarded."""
    evil = lab.repo.fork()
    if role == "timestamp":
        evil.timestamp.version = 10**6 - 1
        evil.publish_timestamp()
    else:
        evil.snapshot.version = 10**6 - 1
        evil.publish()
    lab.server.repo = evil
    assert lab.device.ok("check")["update_available"] is False  # the device took the bait
    lab.release("2.0.0")
    lab.repo.publish()  # the honest versions move past the attacker's, except the forged one
    lab.server.repo = lab.repo
    with attack(lab.device, f"honest update after a {role} fast-forward") as a:
        out = lab.device.run("update")
        a.refused(
            out,
            "BadVersionNumberError",
            f"New {role} version "
            + (
                f"{lab.repo.timestamp.version} must be >= 1000000"
                if role == "timestamp"
                else "must be >= 1000000"
            ),
            event=FAILED_CHECK,
        )
    # Recovery (spec 5.3.11): new keys for the fast-forwarded role, and for snapshot also for
    # timestamp, whose trusted copy still points at the forged snapshot version.
    for rotated in ("timestamp",) if role == "timestamp" else ("snapshot", "timestamp"):
        lab.repo.rotate_keys(rotated)
    lab.recovers("2.0.0", boot=True)


# -- compromised keys below threshold ----------------------------------------------------------


@pytest.mark.parametrize("role", ["root", "targets", "snapshot", "timestamp", "firmware-model-x"])
def test_compromised_key_below_threshold(
    lab: Lab, attack: Callable[..., Attempt], role: str
) -> None:
    """One of the role's keys (threshold 2) is stolen; the attacker also holds every key of
    the roles it needs to get its metadata in front of the device."""
    evil = lab.repo.fork()
    stolen = evil.signers[role][:1]
    evil.sign_with[role] = stolen
    may_change: tuple[str, ...] = ()
    if role == "root":
        # A new root handing targets to the attacker's own key.
        mine = CryptoSigner.generate_ed25519()
        for keyid in list(evil.root.roles["targets"].keyids):
            evil.root.revoke_key(keyid, "targets")
        evil.root.add_key(mine.public_key, "targets")
        evil.root.roles["targets"].threshold = 1
        evil.publish_root(signers=stolen)
        expect = "root was signed by 1/2 keys"
    elif role == "timestamp":
        evil.publish_timestamp()
        expect = "timestamp was signed by 1/2 keys"
    else:
        hw_role = "targets" if role in ("targets", "snapshot") else role
        evil.add_firmware("model-x", "9.0.0", counter=9, role=hw_role, salt="evil")
        evil.publish()
        may_change = ONLINE if role != "snapshot" else ("metadata:timestamp.json",)
        expect = f"{role} was signed by 1/2 keys"
    lab.server.repo = evil
    with attack(lab.device, f"{role} key below threshold", may_change=may_change) as a:
        out = lab.device.run("update")
        a.refused(out, "UnsignedMetadataError", expect, event=FAILED_CHECK)


@pytest.mark.parametrize("role", ["root", "timestamp", "firmware-model-x"])
def test_retired_keys_after_rotation(lab: Lab, attack: Callable[..., Attempt], role: str) -> None:
    """The security team rotated a role's keys after they were stolen; the thief still holds
    every retired key (a full threshold of them) and signs new metadata with it."""
    retired = lab.repo.rotate_keys(role)
    lab.repo.publish(force=["targets"])
    assert lab.device.ok("check")["update_available"] is False  # the device knows the rotation
    evil = lab.repo.fork()
    evil.sign_with[role] = retired[: evil.threshold]
    may_change: tuple[str, ...] = ()
    if role == "root":
        for keyid in list(evil.root.roles["targets"].keyids):
            evil.root.revoke_key(keyid, "targets")
        mine = CryptoSigner.generate_ed25519()
        evil.root.add_key(mine.public_key, "targets")
        evil.root.roles["targets"].threshold = 1
        evil.publish_root(signers=retired[: evil.threshold])
    elif role == "timestamp":
        evil.publish_timestamp()
    else:
        evil.add_firmware("model-x", "9.0.0", counter=9, salt="evil")
        evil.publish()
        may_change = ONLINE  # the stolen online keys sign the snapshot that points at it
    lab.server.repo = evil
    with attack(lab.device, f"retired {role} keys", may_change=may_change) as a:
        out = lab.device.run("update")
        a.refused(
            out, "UnsignedMetadataError", f"{role} was signed by 0/2 keys", event=FAILED_CHECK
        )


def test_compromised_publisher_key_outside_delegated_paths(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """Every key of model-y's publisher is stolen; the attacker lists firmware for model-x in
    firmware-model-y. A model-x device never consults model-y's role for model-x paths."""
    evil = lab.repo.fork()
    evil.add_firmware("model-x", "9.0.0", counter=9, role="firmware-model-y", salt="evil")
    evil.publish()
    lab.server.repo = evil
    with attack(lab.device, may_change=ONLINE) as a:
        a.ignored(
            lab.device.run("check"),
            check=lambda r: r["update_available"] is False,
            event={"event": "check", "result": "no-update"},
        )
    with attack(
        lab.device, "explicit install of the out-of-delegation target", may_change=ONLINE
    ) as a:
        out = lab.device.run("update", "--target", X9)
        a.refused(
            out,
            f"{X9} is not a target in the verified metadata",
            event={"event": "check", "result": "failed"},
        )
    lab.release("2.0.0")
    lab.recovers("2.0.0")


def test_compromised_publisher_key_claims_another_model_in_its_own_folder(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """Every key of model-y's publisher is stolen; inside its own folder it publishes an image
    whose hardware ids claim model-x. Only model-x's delegation may speak for model-x devices:
    the device refuses it even when asked for that path explicitly."""
    evil = lab.repo.fork()
    path = evil.add_firmware(
        "model-y", "9.0.0", counter=9, hardware_ids=["model-x", "model-y"], salt="evil"
    )
    evil.publish()
    lab.server.repo = evil
    with attack(lab.device, may_change=(*ONLINE, "metadata:firmware-model-y.json")) as a:
        out = lab.device.run("update", "--target", path)
        a.refused(
            out,
            f"refused {path}: published outside firmware/model-x/, this device is model-x",
            event={"event": "check", "result": "refused"},
        )


def test_delegated_role_swapped_between_hardware_models(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """The attacker serves model-y's (validly signed) role where model-x's is asked for."""
    lab.repo.add_firmware("model-y", "9.0.0", counter=9, hardware_ids=["model-x", "model-y"])
    lab.release("2.0.0")
    wanted = lab.repo.delegated["firmware-model-x"].version
    other = lab.repo.history["firmware-model-y"][lab.repo.delegated["firmware-model-y"].version]
    lab.server.attack(f"metadata/{wanted}.firmware-model-x.json", serve_bytes(other))
    with attack(lab.device, may_change=ONLINE) as a:
        out = lab.device.run("update")
        a.refused(
            out,
            "UnsignedMetadataError: firmware-model-x was signed by 0/2 keys",
            event=FAILED_CHECK,
        )
    lab.recovers("2.0.0")
