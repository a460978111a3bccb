"""docs/device-integrator.md: every `sh` block runs, in order, as one script against a real
repository over HTTPS; the shipped systemd units' commands run too."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fake_ubootenv import install as install_fw_tools
from tests.helpers.ota_device import BIN, PASSPHRASE, TOKEN, Lab, client_env

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "device-integrator.md"
UNITS = REPO / "client" / "systemd"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", DOC.read_text(), re.M | re.S)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


def test_every_documented_command_runs(lab: Lab, tmp_path: Path) -> None:
    v1 = lab.publish("1.0.0", counter=1)
    lab.publish("2.0.0", counter=1)
    work = tmp_path / "factory"
    work.mkdir()
    shutil.copy(lab.repo_dir / "metadata" / "1.root.json", work / "root.json")
    shutil.copy(lab.tls.ca_cert, work / "ca.pem")
    (work / "device-token").write_text(TOKEN + "\n")
    (work / "fw-1.0.0.bin").write_bytes(lab.published[v1])
    fake_bin = tmp_path / "fake-bin"
    install_fw_tools(fake_bin)
    systemctl_log = tmp_path / "systemctl.log"
    (fake_bin / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {systemctl_log}\n')
    (fake_bin / "systemctl").chmod(0o755)
    root = tmp_path / "rootfs"
    env = client_env(
        ETC=str(root / "etc" / "ota-client"),
        CONFIG=str(root / "etc" / "ota-client.toml"),
        DATA=str(root / "var" / "lib" / "ota-client"),
        SERVER=lab.server.url,
        SLOT_A=str(root / "slot-a.img"),
        SLOT_B=str(root / "slot-b.img"),
        SRC=str(REPO),
        UNITS=str(root / "etc" / "systemd" / "system"),
        FAKE_UBOOT_ENV=str(tmp_path / "uboot-env.json"),
        PATH=f"{fake_bin}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
    )
    (root / "etc").mkdir(parents=True)
    script = "\n".join(blocks("sh"))
    assert "ota-client provision" in script and "ota-client log verify" in script
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "provisioned: slot A holds 1.0.0 (firmware/model-x/fw-1.0.0.bin)" in out
    assert "update available: 2.0.0" in out
    assert "installed 2.0.0 into slot B; reboot to try it" in out
    assert "booted slot B: 2.0.0 (committed after a passing health check)" in out
    assert "event log OK" in out
    assert "ota_active=A" in out
    assert systemctl_log.read_text().splitlines() == [
        "daemon-reload",
        "enable ota-client-boot.service",
        "enable --now ota-client.service",
    ]
    installed = sorted(p.name for p in (root / "etc" / "systemd" / "system").iterdir())
    assert installed == sorted(p.name for p in UNITS.iterdir())
    data = root / "var" / "lib" / "ota-client"
    assert data.stat().st_mode & 0o777 == 0o700
    assert (root / "etc" / "ota-client" / "token").stat().st_mode & 0o777 == 0o600

    # The units' commands, with the paths of this sandbox.
    def unit_command(unit: str) -> list[str]:
        text = (UNITS / unit).read_text()
        line = re.search(r"^ExecStart=(.*)$", text, re.M)
        assert line is not None
        argv = shlex.split(line.group(1))
        assert argv[:3] == ["/usr/bin/ota-client", "--config", "/etc/ota-client.toml"]
        return [str(BIN / "ota-client"), "--config", env["CONFIG"], *argv[3:]]

    for unit in ("ota-client-boot.service", "ota-client-update.service"):
        done = subprocess.run(
            unit_command(unit),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, (unit, done.stderr)
    agent = subprocess.Popen(
        unit_command("ota-client.service"),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        agent.wait(timeout=1)
    except subprocess.TimeoutExpired:
        pass
    agent.send_signal(signal.SIGTERM)
    stdout, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr
    assert stdout.startswith("stopped after")
    assert "OnUnitActiveSec=1h" in (UNITS / "ota-client-update.timer").read_text()
    status = json.loads(
        subprocess.run(
            [str(BIN / "ota-client"), "--config", env["CONFIG"], "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert status["installed_version"] == "2.0.0"


def test_documented_uboot_settings_are_accepted(tmp_path: Path) -> None:
    from client.config import parse_config

    [snippet] = blocks("toml")
    boot = tomllib.loads(snippet)
    config = parse_config(
        {
            "device_id": "d",
            "hardware_id": "model-x",
            "data_dir": "data",
            "trusted_root": "r",
            "server": {"metadata_url": "https://s/metadata/", "targets_url": "https://s/targets/"},
            "slots": {"A": "/dev/a", "B": "/dev/b"},
            "boot": boot,
        },
        tmp_path,
    )
    assert config.boot.backend == "uboot"
    assert config.boot.reboot_command == ("systemctl", "reboot")


def test_documented_data_dir_error_is_what_the_client_prints(tmp_path: Path) -> None:
    """The example error for a data directory left at 0755 is the client's exact line, and the
    commands it names make `ota-client boot` get past the permission check."""
    doc = DOC.read_text()
    [example] = re.findall(r"^  ota-client: error: /var/lib/ota-client has mode .*$", doc, re.M)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # whatever the umask
    config = tmp_path / "ota-client.toml"
    config.write_text(f"""\
device_id = "d"
hardware_id = "model-x"
data_dir = "{data}"
trusted_root = "root.json"
[server]
metadata_url = "https://127.0.0.1:9/metadata/"
targets_url = "https://127.0.0.1:9/targets/"
[slots]
A = "a.img"
B = "b.img"
""")
    boot = [str(BIN / "ota-client"), "--config", str(config), "boot"]
    proc = subprocess.run(boot, capture_output=True, text=True, env=client_env(), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.replace(str(data), "/var/lib/ota-client") == example.strip() + "\n"
    assert '`chmod -R go-rwx "$DATA"`' in doc
    subprocess.run(["chmod", "-R", "go-rwx", str(data)], check=True)
    proc = subprocess.run(boot, capture_output=True, text=True, env=client_env(), timeout=60)
    # past the permission check: it now stops because nothing is provisioned yet
    assert (
        proc.stderr
        == "ota-client: error: no bootable slot: slot A: no verified image is recorded for it\n"
    )
