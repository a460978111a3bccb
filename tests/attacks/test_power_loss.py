"""Power-loss matrix: the client is killed with SIGKILL at each step of install and boot (through
its test hook `OTA_CLIENT_TEST_KILL_AT`) and at random moments; after every cut the next
`ota-client boot` comes up on a slot whose image is exactly a verified release, and the update
then completes. Power loss is not an attack, so these tests are not in the attack tally.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.device import BIN, LabDevice, client_env
from tests.attacks.toolkit.simulator import firmware_path

KILL_ENV = "OTA_CLIENT_TEST_KILL_AT"
INSTALL_STEPS = [
    "install-slot-cleared",
    "download-checkpoint",
    "download-mid",
    "install-written",
    "install-recorded",
    "install-trial-set",
]
BOOT_STEPS = ["boot-counted", "boot-health-checked", "boot-committed"]
SIZE = 1024 * 1024  # several checkpoints


def verified_boot(lab: Lab, dev: LabDevice) -> str:
    """Boot; the booted slot must hold exactly the image of the version it reports."""
    result = dev.ok("boot")
    slot, version = result["slot"], result["version"]
    assert dev.slot_holds(slot, lab.repo.images[firmware_path("model-x", version)]), result
    status = dev.status()
    assert status["active_slot"] == slot and status["installed_version"] == version
    return str(version)


def finish(lab: Lab, dev: LabDevice, version: str) -> None:
    """The interrupted update completes (bounded rounds of update + boot)."""
    for _ in range(3):
        if dev.status()["installed_version"] == version and dev.status()["trial_slot"] is None:
            break
        dev.run("update")
        verified_boot(lab, dev)
    assert dev.status()["installed_version"] == version
    assert dev.ok("log", "verify")["ok"] is True


@pytest.mark.parametrize("step", INSTALL_STEPS)
def test_power_loss_during_install(lab: Lab, step: str) -> None:
    # The client checkpoints from a background thread while the download goes on: give it
    # a download long enough that a checkpoint certainly happens before the end.
    lab.release("2.0.0", size=8 * SIZE if step == "download-checkpoint" else SIZE)
    killed = lab.device.run("update", env=client_env(**{KILL_ENV: step}))
    assert killed.returncode == -signal.SIGKILL, f"{step} was never reached: {killed}"
    assert verified_boot(lab, lab.device) in ("1.0.0", "2.0.0")
    finish(lab, lab.device, "2.0.0")


@pytest.mark.parametrize("step", BOOT_STEPS)
def test_power_loss_during_boot(lab: Lab, step: str) -> None:
    lab.release("2.0.0", size=SIZE)
    assert lab.device.ok("update")["slot"] == "B"
    killed = lab.device.run("boot", env=client_env(**{KILL_ENV: step}))
    assert killed.returncode == -signal.SIGKILL, f"{step} was never reached: {killed}"
    assert verified_boot(lab, lab.device) in ("1.0.0", "2.0.0")
    finish(lab, lab.device, "2.0.0")


def test_power_loss_during_fallback(lab: Lab) -> None:
    """Cut while falling back from an image that failed its health check."""
    lab.release("2.0.0", size=SIZE, healthy=False)
    assert lab.device.ok("update")["slot"] == "B"
    killed = lab.device.run("boot", env=client_env(**{KILL_ENV: "boot-fell-back"}))
    assert killed.returncode == -signal.SIGKILL
    assert verified_boot(lab, lab.device) == "1.0.0"
    assert lab.device.ok("check")["update_available"] is False  # the bad image is not retried


def test_power_loss_at_random_times(lab: Lab) -> None:
    """SIGKILL at random moments of `update` and `boot` (seeded; the seed is printed). Each
    trial has real work to cut: a pending trial is booted, otherwise a newer release is
    installed; the kill time is drawn within the time such a run has been seen to take."""
    seed = random.randrange(2**32)
    print(f"power-loss seed {seed}")
    rng = random.Random(seed)
    dev = lab.device
    took = {"update": 1.0, "boot": 0.6}  # seconds, refined by runs that were not cut
    kills = trials = 0
    release = 1
    while kills < 6 and trials < 20:
        trials += 1
        status = dev.status()
        if status["trial_slot"] is not None:
            command = "boot"
        else:
            if status["installed_version"] == f"{release}.0.0":
                release += 1
                lab.release(f"{release}.0.0", size=4 * SIZE)
            command = "update"
        proc = subprocess.Popen(
            [str(BIN / "ota-client"), "--config", str(dev.config_path), "--json", command],
            env=client_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        started = time.monotonic()
        try:
            proc.wait(timeout=rng.uniform(0.25, 1.0) * took[command])  # past start-up, mostly
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        else:
            took[command] = max(0.2, time.monotonic() - started)
        proc.wait(timeout=60)
        booted = verified_boot(lab, dev)
        assert booted in {f"{v}.0.0" for v in range(1, release + 1)}, f"seed {seed}"
    finish(lab, dev, f"{release}.0.0")
    assert kills >= 3, f"seed {seed}: only {kills} of {trials} runs were cut"


def test_power_loss_matrix_covers_every_kill_point() -> None:
    """Every step the client can be cut at (its `kill_point` calls) is in the matrix above."""
    client = Path(__file__).resolve().parents[2] / "client"
    steps = set()
    for path in client.rglob("*.py"):
        steps |= set(re.findall(r'kill_point\("([a-z0-9-]+)"\)', path.read_text()))
    assert steps, "no kill points found in client/"
    assert steps == {*INSTALL_STEPS, *BOOT_STEPS, "boot-fell-back"}
