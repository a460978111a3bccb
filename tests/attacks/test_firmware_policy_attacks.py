"""Attacks with validly signed metadata that the device's firmware policy must still refuse:
downgrades by re-publication, firmware for another hardware model, and target paths that try to
leave the firmware folders. The attacker here holds a publisher's keys (or is a careless
publisher): TUF accepts the metadata, the device's policy on the verified `TargetFile` does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.simulator import firmware_custom, firmware_path, image

X1 = firmware_path("model-x", "1.0.0")
Y1 = firmware_path("model-y", "1.0.0")
REFUSED_CHECK = {"event": "check", "result": "refused"}
# The honest metadata that carries the attack is new to the device and rightly trusted.
NEW_METADATA = (
    "metadata:timestamp.json",
    "metadata:snapshot.json",
    "metadata:firmware-model-x.json",
)
NO_UPDATE = {"event": "check", "result": "no-update"}


def _commit(lab: Lab, version: str, counter: int) -> str:
    path = lab.release(version, counter=counter)
    assert lab.device.ok("update")["version"] == version
    assert lab.device.ok("boot")["committed"] is True
    return path


@pytest.mark.parametrize("how", ["same-version", "renumbered-below-counter"])
def test_firmware_downgrade_by_republication(
    lab: Lab, attack: Callable[..., Attempt], how: str
) -> None:
    """The device runs 2.0.0 (security counter 2). The publisher re-publishes the old 1.0.0
    image: as it was, or renamed 3.0.0 but still carrying its old security counter 1."""
    _commit(lab, "2.0.0", counter=2)
    old = lab.repo.images[X1]
    if how == "same-version":
        lab.repo.add_target("firmware-model-x", X1, old, firmware_custom("1.0.0", ["model-x"], 1))
        path, expect = X1, f"refused {X1}: version 1.0.0 is not newer than the installed 2.0.0"
    else:
        path = firmware_path("model-x", "3.0.0")
        lab.repo.add_target("firmware-model-x", path, old, firmware_custom("3.0.0", ["model-x"], 1))
        expect = f"refused {path}: security counter 1 is below the device's 2"
    lab.repo.publish(force=["firmware-model-x"])
    with attack(lab.device, f"{how}: automatic update", may_change=NEW_METADATA) as a:
        result = a.ignored(
            lab.device.run("update"), check=lambda r: r["result"] == "no-update", event=NO_UPDATE
        )
    with attack(lab.device, f"{how}: explicit install") as a:
        a.refused(lab.device.run("update", "--target", path), expect, event=REFUSED_CHECK)
    if how != "same-version":
        check = lab.device.ok("check")
        assert {"target": path, "reason": expect} in check["skipped"], check
    assert result["from_version"] == "2.0.0"


@pytest.mark.parametrize("how", ["other-models-image", "mislabelled-in-own-folder"])
def test_wrong_hardware_model(lab: Lab, attack: Callable[..., Attempt], how: str) -> None:
    """Firmware built for model-y: model-y's own (validly signed) image asked for by path, or
    an image labelled for model-y that model-x's publisher put in model-x's folder."""
    if how == "other-models-image":
        path = Y1
        expect = f"refused {Y1}: built for model-y, this device is model-x"
        may_change = ("metadata:firmware-model-y.json",)
    else:
        path = lab.repo.add_firmware("model-x", "9.0.0", counter=9, hardware_ids=["model-y"])
        lab.repo.publish()
        expect = f"refused {path}: built for model-y, this device is model-x"
        may_change = NEW_METADATA
    with attack(lab.device, may_change=may_change) as a:
        a.refused(lab.device.run("update", "--target", path), expect, event=REFUSED_CHECK)
    if how == "mislabelled-in-own-folder":
        with attack(lab.device, "automatic update skips it") as a:
            check = a.ignored(
                lab.device.run("check"),
                check=lambda r: r["update_available"] is False,
                event=NO_UPDATE,
            )
        assert {"target": path, "reason": expect} in check["skipped"]
    lab.release("2.0.0")
    lab.recovers("2.0.0")


NOT_LISTED = "{path} is not a target in the verified metadata"  # no delegation pattern matches
BAD_NAME = "{path!r}: firmware names use only [A-Za-z0-9._+-] in each path segment"
TRAVERSAL = {
    "dotdot": ("firmware/model-x/../../../../{tmp}/pwned/fw-9.0.0.bin", NOT_LISTED),
    "dotdot-in-folder": ("firmware/model-x/../model-x/fw-9.0.0.bin", NOT_LISTED),
    "absolute": ("/{tmp}/pwned/fw-9.0.0.bin", NOT_LISTED),
    "encoded-slash": ("firmware/model-x/..%2f..%2f..%2fpwned-fw-9.0.0.bin", BAD_NAME),
    "encoded-dots": ("firmware/model-x/%2e%2e/pwned-fw-9.0.0.bin", NOT_LISTED),
    "backslash": ("firmware/model-x/..\\..\\pwned-fw-9.0.0.bin", BAD_NAME),
}


@pytest.mark.parametrize("form", list(TRAVERSAL))
def test_target_path_traversal(
    lab: Lab, attack: Callable[..., Attempt], form: str, tmp_path: Path
) -> None:
    """A publisher's metadata lists a newer image under a path that tries to leave the firmware
    folder (`../`, absolute, percent-encoded, backslashes). The mirror serves the bytes under
    that name too. The device must not install it, and nothing is written outside its slots
    and data directory."""
    template, refusal = TRAVERSAL[form]
    path = template.format(tmp=str(tmp_path).lstrip("/"))
    lab.repo.add_target(
        "firmware-model-x",
        path,
        image("9.0.0", salt="pwned"),
        firmware_custom("9.0.0", ["model-x"], 9),
    )
    lab.repo.publish()
    before = sorted(p for p in tmp_path.rglob("*") if "pwned" in str(p))
    with attack(lab.device, f"traversal ({form}): automatic update", may_change=NEW_METADATA) as a:
        a.ignored(
            lab.device.run("update"), check=lambda r: r["result"] == "no-update", event=NO_UPDATE
        )
    with attack(lab.device, f"traversal ({form}): explicit install") as a:
        out = lab.device.run("update", "--target", path)
        a.refused(out, refusal.format(path=path), event={"event": "check"})
    assert sorted(p for p in tmp_path.rglob("*") if "pwned" in str(p)) == before
    lab.release("2.0.0")
    lab.recovers("2.0.0")
