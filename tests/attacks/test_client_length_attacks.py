"""Attacks with the signed length of an image: an attacker who holds the keys (or a publisher
who lies) signs a target whose `length` differs from the bytes whose hash it lists.

python-tuf judges the length and the hashes; the device must give it the bytes that actually
arrived, so a length that is not the image's is refused before anything is marked, and a
length no slot can hold is refused at the check, before a byte is downloaded. The boot check
reads a slot only when its size matches the recorded image, and never more than that image.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.simulator import firmware_path

V50 = firmware_path("model-x", "50.0.0")
# Every metadata file the attacker signs with the real keys is rightly trusted.
SIGNED_BY_THE_KEYS = (
    "metadata:timestamp.json",
    "metadata:snapshot.json",
    "metadata:targets.json",
    "metadata:firmware-model-x.json",
)
TIB = 2**40


def _lying_release(lab: Lab, length: int) -> bytes:
    """An attacker with the targets and delegated keys lists 50.0.0 with `length` but the
    hashes of a 4 KiB image it serves."""
    evil = lab.repo.fork()
    evil.add_firmware("model-x", "50.0.0", counter=2, size=4096)
    evil.target(V50).length = length
    evil.publish()
    lab.server.repo = evil
    return evil.images[V50]


def _nothing_marked(lab: Lab) -> None:
    status = lab.device.status()
    assert status["slots"]["B"] is None and status["trial_slot"] is None, status
    assert not any(e.get("event") in ("install", "commit") for e in lab.device.events())


def test_signed_length_beyond_the_slot_capacity_is_refused_at_check(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """The signed length is 1 TiB (or more than the slot's filesystem could ever hold): the
    check passes over it, `update --target` refuses it, and not a byte is downloaded."""
    free = shutil.disk_usage(lab.device.slots["B"].parent).free
    length = max(TIB, 4 * free)
    _lying_release(lab, length)
    with attack(lab.device, may_change=SIGNED_BY_THE_KEYS) as a:
        result = a.ignored(lab.device.run("check"), check=lambda r: r["update_available"] is False)
        assert [s["target"] for s in result["skipped"]] == [V50], result
        assert f"needs {length} bytes" in result["skipped"][0]["reason"], result
        out = lab.device.run("update", "--target", V50)
        a.refused(
            out,
            f"{V50} needs {length} bytes",
            "slot B holds at most",
            event={"event": "check", "result": "refused"},
        )
    assert not any(V50.rsplit("/", 1)[1] in p for _, p, _ in lab.server.requests)
    assert not lab.device.slots["B"].exists()
    _nothing_marked(lab)
    lab.release("2.0.0", counter=2)
    lab.recovers("2.0.0", boot=True)


def test_signed_length_longer_than_the_image_is_refused(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """The signed length is 1 MiB more than the 4 KiB image whose hash is listed: the bytes
    that arrived (4 KiB) are not the signed length, so nothing is installed or marked (the old
    device compared the signed length with itself and installed a sparse 1 MiB slot)."""
    length = 4096 + 1024 * 1024
    _lying_release(lab, length)
    with attack(lab.device, may_change=SIGNED_BY_THE_KEYS) as a:
        out = lab.device.run("update")
        a.refused(
            out,
            f"download of {V50} failed",
            f"ended early at 4096 of {length} bytes",
            event={"event": "download", "result": "failed"},
        )
        again = lab.device.run("update")  # the resume gets nothing more: still refused
        assert again.returncode == 1 and V50 in again.error, again
        boot = lab.device.run("boot")
        assert boot.json["slot"] == "A" and boot.json["committed"] is False, boot
    assert lab.device.slots["B"].stat().st_size <= 4096  # never stretched to the signed length
    _nothing_marked(lab)
    lab.release("2.0.0", counter=2)
    lab.recovers("2.0.0", boot=True)


def test_boot_never_reads_beyond_the_recorded_image(
    lab: Lab, attack: Callable[..., Attempt]
) -> None:
    """The committed slot file is extended to 1 TiB (sparse) while the device is off: the boot
    check refuses a file slot whose size is not the recorded image's length at once, without
    hashing the terabyte (the old check read the slot's first bytes and booted it)."""
    dev = lab.device
    path = dev.slots["A"]
    original = path.read_bytes()
    with attack(dev) as a:
        os.truncate(path, TIB)
        try:
            out = dev.run("boot", timeout=60)
        finally:
            os.truncate(path, len(original))  # control: the genuine image boots again
        a.refused(
            out,
            "no bootable slot: slot A",
            f"slot A holds {TIB} bytes, not the {len(original)} of",
            event={"event": "boot", "result": "failed"},
        )
    assert dev.ok("boot")["slot"] == "A"
