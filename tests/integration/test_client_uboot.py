"""The U-Boot boot control backend, driven through `fw_printenv` / `fw_setenv` (stand-ins
keeping the environment in a file) and a simulated boot script that counts the tries."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fake_ubootenv import bootloader, install
from tests.helpers.ota_device import PASSPHRASE, DeviceHandle, Lab, client_env


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


class UBootDevice:
    def __init__(self, lab: Lab, tmp: Path):
        install(tmp / "bin")
        self.store = tmp / "uboot-env.json"
        self.reboots = tmp / "reboots"
        self.env = client_env(
            PATH=f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}", FAKE_UBOOT_ENV=str(self.store)
        )
        reboot = tmp / "reboot"
        reboot.write_text(f"#!/bin/sh\necho reboot >> {self.reboots}\n")
        reboot.chmod(0o755)
        self.dev: DeviceHandle = lab.device(
            boot=f'backend = "uboot"\nreboot_command = ["{reboot}"]'
        )

    def run(self, *args: str) -> dict[str, object]:
        proc = self.dev.run(*args, "--json", env=self.env)
        assert proc.returncode == 0, proc.stderr
        result: dict[str, object] = json.loads(proc.stdout)
        return result

    def uboot_env(self) -> dict[str, str]:
        return json.loads(self.store.read_text()) if self.store.exists() else {}


def test_update_commit_rollback_and_bootloader_fallback(lab: Lab, tmp_path: Path) -> None:
    v1 = lab.publish("1.0.0")
    lab.publish("2.0.0", counter=1)
    u = UBootDevice(lab, tmp_path)
    u.dev.slots["A"].write_bytes(lab.published[v1])
    assert u.run("provision", "--slot", "A", "--target", v1)["slot"] == "A"
    assert u.uboot_env() == {"ota_active": "A", "ota_tries": "0"}

    assert u.run("update")["slot"] == "B"
    assert u.uboot_env() == {"ota_active": "A", "ota_trial": "B", "ota_tries": "3"}
    assert bootloader(u.store) == "B"  # the boot script counts the try
    assert u.run("boot")["committed"] is True
    assert u.uboot_env() == {"ota_active": "B", "ota_tries": "0"}
    assert not u.reboots.exists()

    # a broken 3.0.0: the health check fails in userspace, the client reboots into B
    lab.publish("3.0.0", counter=1, healthy=False)
    assert u.run("update")["slot"] == "A"
    assert bootloader(u.store) == "A"
    booted = u.run("boot")
    assert (booted["rolled_back"], booted["reason"], booted["reboot_required"]) == (
        True,
        "health check exited 3",
        True,
    )
    assert u.reboots.read_text() == "reboot\n"
    assert bootloader(u.store) == "B"
    assert u.run("boot")["version"] == "2.0.0"

    # 4.0.0 hangs before userspace every time: the boot script gives up on its own
    lab.publish("4.0.0", counter=1)
    assert u.run("update")["slot"] == "A"
    for _ in range(3):
        assert bootloader(u.store) == "A"  # ... and the kernel hangs: no `ota-client boot`
    assert bootloader(u.store) == "B"
    booted = u.run("boot")
    assert (booted["slot"], booted["version"]) == ("B", "2.0.0")
    last = u.dev.events()[-2]
    assert (last["event"], last["reason"]) == (
        "rollback",
        "boot tries exhausted (the bootloader fell back)",
    )
    assert u.run("check")["update_available"] is False  # 3.0.0 and 4.0.0 are not retried
    assert u.run("status")["installed_version"] == "2.0.0"
