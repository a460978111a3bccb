"""End to end with real processes: a device provisioned with v1 updates to v3 over HTTPS, boots
and commits it; a v4 that fails its health check is rolled back, and the log and report say so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ota_device import PASSPHRASE, TOKEN, Lab, sha256
from tests.helpers.repo import assert_one_line_error


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


def test_update_v1_to_v3_then_failing_v4_rolls_back(lab: Lab) -> None:
    v1 = lab.publish("1.0.0", counter=1)
    lab.publish("2.0.0", counter=1)
    v3 = lab.publish("3.0.0", counter=2, size=512 * 1024)
    dev = lab.device(factory=v1)
    assert dev.status()["installed_version"] == "1.0.0"

    check = dev.json("check")
    assert check["update_available"] and check["candidate"]["version"] == "3.0.0"

    proc = dev.run("update", "--progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "installed 3.0.0 into slot B; reboot to try it\n"
    assert proc.stderr.splitlines()[-1] == "downloading: 100% (524288/524288 bytes)"
    result = [e for e in dev.events() if e["event"] == "install"][-1]
    assert (result["from_version"], result["to_version"], result["slot"], result["target"]) == (
        "1.0.0",
        "3.0.0",
        "B",
        v3,
    )
    assert dev.slots["B"].read_bytes() == lab.published[v3]
    status = dev.status()
    assert status["installed_version"] == "1.0.0"  # not committed before the trial boot
    assert (status["trial_slot"], status["trial_tries_left"]) == ("B", 3)
    assert_one_line_error(
        dev.run("update"), "slot B is waiting for its trial boot: reboot (ota-client boot) first"
    )

    booted = dev.json("boot")
    assert booted == {
        "slot": "B",
        "version": "3.0.0",
        "committed": True,
        "rolled_back": False,
        "reason": None,
        "reboot_required": False,
    }
    status = dev.status()
    assert (status["active_slot"], status["installed_version"]) == ("B", "3.0.0")
    assert status["security_counter"] == 2 and status["trial_slot"] is None
    assert dev.json("check")["update_available"] is False

    # v4 is signed and newer, but its image fails the health check on the device.
    v4 = lab.publish("4.0.0", counter=2, healthy=False)
    assert dev.json("update")["slot"] == "A"
    booted = dev.json("boot")
    assert booted == {
        "slot": "B",
        "version": "3.0.0",
        "committed": False,
        "rolled_back": True,
        "reason": "health check exited 3",
        "reboot_required": False,
    }
    status = dev.status()
    assert (status["active_slot"], status["installed_version"]) == ("B", "3.0.0")
    assert sha256(dev.slots["B"].read_bytes()) == sha256(lab.published[v3])
    # The rolled-back image is not installed again.
    again = dev.json("check")
    assert again["update_available"] is False
    assert {"target": v4, "reason": "rolled back on this device before"} in again["skipped"]
    assert dev.json("boot")["slot"] == "B"

    rollbacks = [e for e in dev.events() if e["event"] == "rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["reason"] == "health check exited 3"
    assert (rollbacks[0]["from_version"], rollbacks[0]["to_version"]) == ("4.0.0", "3.0.0")
    assert dev.json("log", "verify")["ok"] is True

    reports = lab.server.reports()
    assert [(r["event"], r["result"], r["installed_version"], r["slot"]) for r in reports] == [
        ("install", "installed", "1.0.0", "B"),
        ("commit", "committed", "3.0.0", "B"),
        ("install", "installed", "3.0.0", "A"),
        ("rollback", "rolled-back", "3.0.0", "B"),
    ]
    assert reports[-1]["reason"] == "health check exited 3"
    assert all(
        set(r)
        == {"device_id", "installed_version", "slot", "result", "reason", "event", "report_id"}
        for r in reports
    )
    ids = [r["report_id"] for r in reports]  # one per report, the same on each of its retries
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert dev.status()["reports_queued"] == 0
    # Every request carried the device token; no secret reached argv, output or the log.
    assert all(r["auth"] for r in lab.server.requests())
    assert TOKEN not in (dev.data_dir / "events.log").read_text()
