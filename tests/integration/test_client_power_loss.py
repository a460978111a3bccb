"""Power loss: `ota-client update` and `ota-client boot` killed with SIGKILL at deterministic
points and at random moments (at least 50 trials). After every kill `ota-client boot` must come
up on a slot whose bytes are exactly a published image, and the next update must complete."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers.ota_device import BIN, PASSPHRASE, DeviceHandle, Lab, client_env, sha256

UPDATE_POINTS = [
    "install-slot-cleared",
    "download-checkpoint",
    "download-mid",
    "install-written",
    "install-recorded",
    "install-trial-set",
]
BOOT_POINTS = ["boot-counted", "boot-health-checked", "boot-committed"]
CYCLES_PER_DEVICE = 13
IMAGE_SIZE = 512 * 1024


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


class Ladder:
    """Publishes the next version whenever a device has caught up (shared by two devices)."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.lock = threading.Lock()
        self.newest = 1
        self.by_version: dict[str, str] = {}

    def publish_first(self) -> str:
        path = self.lab.publish("1", size=IMAGE_SIZE)
        self.by_version["1"] = path
        return path

    def ensure_newer_than(self, version: str) -> int:
        with self.lock:
            if int(version) >= self.newest:
                self.newest += 1
                self.by_version[str(self.newest)] = self.lab.publish(
                    str(self.newest), size=IMAGE_SIZE
                )
            return self.newest


def _kill_after(argv: list[str], delay: float, env: dict[str, str]) -> int:
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)


def _boot_checked(
    lab: Lab, ladder: Ladder, dev: DeviceHandle, what: str, problems: list[str]
) -> str | None:
    """Boot; the booted slot must hold exactly a published image. Returns its version."""
    proc = dev.run("boot", "--json")
    if proc.returncode != 0:
        problems.append(f"{what}: boot failed: {proc.stderr.strip()}")
        return None
    booted = json.loads(proc.stdout)
    expected = lab.published[ladder.by_version[booted["version"]]]
    if sha256(dev.slots[booted["slot"]].read_bytes()) != sha256(expected):
        problems.append(f"{what}: booted slot {booted['slot']} does not hold {booted['version']}")
        return None
    return str(booted["version"])


def _trials(lab: Lab, ladder: Ladder, dev: DeviceHandle, seed: int) -> tuple[int, list[str]]:
    """Cycles of two trials: an update killed (then boot, then an update that must complete),
    and a boot killed during the trial boot of that update (then boot)."""
    rng = random.Random(seed)
    argv = [str(BIN / "ota-client"), "--config", str(dev.config_path)]
    problems: list[str] = []
    trials = 0
    installed = "1"
    for cycle in range(CYCLES_PER_DEVICE):
        ladder.ensure_newer_than(installed)
        if cycle % 2:
            delay = rng.uniform(0.05, 0.5)
            what = f"cycle {cycle}: update killed after {delay:.2f} s"
            _kill_after([*argv, "update"], delay, client_env())
        else:
            point = rng.choice(UPDATE_POINTS)
            what = f"cycle {cycle}: update killed at {point}"
            dev.run("update", env=client_env(OTA_CLIENT_TEST_KILL_AT=point))
        trials += 1
        booted = _boot_checked(lab, ladder, dev, what, problems)
        if booted is None:
            continue
        newest = ladder.ensure_newer_than(booted)
        done = dev.run("update", "--json")
        if done.returncode != 0:
            problems.append(f"{what}: the next update failed: {done.stderr.strip()}")
            continue
        if cycle % 2:
            delay = rng.uniform(0.05, 0.3)
            what = f"cycle {cycle}: boot killed after {delay:.2f} s"
            _kill_after([*argv, "boot"], delay, client_env())
        else:
            point = rng.choice(BOOT_POINTS)
            what = f"cycle {cycle}: boot killed at {point}"
            dev.run("boot", env=client_env(OTA_CLIENT_TEST_KILL_AT=point))
        trials += 1
        booted = _boot_checked(lab, ladder, dev, what, problems)
        if booted is None:
            continue
        if int(booted) < newest:
            problems.append(f"{what}: the update to {newest} did not complete (on {booted})")
        installed = booted
    return trials, problems


@pytest.mark.slow
def test_sigkill_during_download_install_and_boot_never_leaves_device_unbootable(
    lab: Lab,
) -> None:
    ladder = Ladder(lab)
    first = ladder.publish_first()
    devices = [lab.device(f"dev-{i}", factory=first) for i in range(2)]
    # slow firmware transfers down so random kills land inside downloads
    lab.server.set_faults({"throttle": {".fw-": 4 * 1024 * 1024}})
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda a: _trials(lab, ladder, *a), [(d, i) for i, d in enumerate(devices)])
        )
    trials = sum(n for n, _ in results)
    problems = [p for _, ps in results for p in ps]
    assert trials >= 50
    assert problems == [], f"{len(problems)} unbootable outcomes in {trials} trials"
    for dev in devices:
        assert dev.json("log", "verify")["ok"]
    print(f"{trials} power-loss trials in {time.monotonic() - started:.1f} s")


def test_boot_tries_exhausted_by_crashes_fall_back(lab: Lab) -> None:
    """A trial image that crashes the device during every health check is given up after
    `max_tries` boots; the committed slot boots and the image is not installed again."""
    v1 = lab.publish("1.0.0")
    lab.publish("2.0.0")
    dev = lab.device(factory=v1, max_tries=2)
    assert dev.json("update")["slot"] == "B"
    crash = client_env(OTA_CLIENT_TEST_KILL_AT="boot-health-checked")
    for tries_left in (1, 0):
        assert dev.run("boot", env=crash).returncode == -signal.SIGKILL
        assert dev.status()["trial_tries_left"] == tries_left
    booted = dev.json("boot")
    assert booted == {
        "slot": "A",
        "version": "1.0.0",
        "committed": False,
        "rolled_back": True,
        "reason": "boot tries exhausted",
        "reboot_required": False,
    }
    assert dev.json("update")["result"] == "no-update"
    assert dev.slots["A"].read_bytes() == lab.published[v1]


def test_power_loss_after_a_checkpoint_resumes_there(lab: Lab) -> None:
    v1 = lab.publish("1.0.0")
    v2 = lab.publish("2.0.0", size=2 * 1024 * 1024)
    dev = lab.device(factory=v1)
    lab.server.set_faults({"throttle": {".fw-": 2 * 1024 * 1024}})
    killed = dev.run("update", env=client_env(OTA_CLIENT_TEST_KILL_AT="download-checkpoint"))
    assert killed.returncode == -signal.SIGKILL
    offset = json.loads((dev.data_dir / "download.json").read_text())["offset"]
    assert 0 < offset < len(lab.published[v2])
    assert dev.json("boot")["slot"] == "A"
    lab.server.reset_log()
    assert dev.json("update")["version"] == "2.0.0"
    [fetch] = [r for r in lab.server.requests() if "fw-2.0.0" in r["path"]]
    assert (fetch["range"], fetch["status"]) == (f"bytes={offset}-", 206)
    assert dev.json("boot")["committed"]
    assert dev.slots["B"].read_bytes() == lab.published[v2]
