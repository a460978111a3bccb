"""A simulated device driven as the real `ota-client` process, and what must never change on it.

`LabDevice` writes a configuration (pinned test CA, the provisioned root from the repository's
`1.root.json`, two slot files, a health check that fails images starting with `BAD!`), puts a
factory image in slot A and provisions it with `ota-client provision`. Every command is a real
subprocess (optionally with its wall clock ahead of real time, see `clock.py`); `protected()`
reads the state the device trusts (active slot and its bytes, installed version, security
counter, pending trial, ngclient's metadata cache) through the client's own state code, so an
attack test can prove that nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.attacks.toolkit import clock
from tests.attacks.toolkit.clock import clock_prefix

BIN = Path(sys.executable).parent
CLIENT_TIMEOUT = 90.0

# The health check a "booted" image must pass: a broken build starts with BAD!.
HEALTH_CHECK = """#!/bin/sh
head -c 4 "$OTA_SLOT_PATH" | grep -q 'BAD!' && exit 3
exit 0
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Outcome:
    """One finished `ota-client` run."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The one-line refusal (stderr), without the program prefix."""
        lines = self.stderr.strip().splitlines()
        assert "Traceback" not in self.stderr, self.stderr
        assert len(lines) == 1, f"expected one line on stderr, got: {self.stderr!r}"
        return lines[0].removeprefix("ota-client: error: ")

    @property
    def json(self) -> dict[str, Any]:
        assert self.returncode == 0, f"ota-client {self.args} failed: {self.stderr}"
        value: dict[str, Any] = json.loads(self.stdout)
        return value


@dataclass
class LabDevice:
    """One device: configuration, private data directory and two slot files."""

    name: str
    folder: Path
    hwid: str
    config_path: Path
    data_dir: Path
    slots: dict[str, Path]
    runs: list[Outcome] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        folder: Path,
        *,
        server_url: str,
        ca_cert: Path,
        trusted_root: bytes,
        hwid: str = "model-x",
        name: str = "dev-1",
        server: dict[str, Any] | None = None,
        boot: dict[str, Any] | None = None,
    ) -> LabDevice:
        etc = folder / "etc"
        etc.mkdir(parents=True)
        (etc / "root.json").write_bytes(trusted_root)
        health = etc / "health-check"
        health.write_text(HEALTH_CHECK)
        health.chmod(0o755)
        slots = {"A": folder / "slot-a.img", "B": folder / "slot-b.img"}
        data_dir = folder / "data"
        server_table = {
            "metadata_url": f"{server_url}/metadata/",
            "targets_url": f"{server_url}/targets/",
            "reports_url": f"{server_url}/api/v1/reports",
            "ca_bundle": str(ca_cert),
            "read_timeout": 5.0,
            "connect_timeout": 5.0,
            **(server or {}),
        }
        boot_table = {
            "max_tries": 2,
            "health_check": [str(health)],
            "health_timeout": 20.0,
            **(boot or {}),
        }
        config = etc / "ota-client.toml"
        config.write_text(
            f'device_id = "{name}"\nhardware_id = "{hwid}"\ndata_dir = "{data_dir}"\n'
            'trusted_root = "root.json"\n\n'
            f"[server]\n{_toml_table(server_table)}\n"
            f'[slots]\nA = "{slots["A"]}"\nB = "{slots["B"]}"\n\n'
            f"[boot]\n{_toml_table(boot_table)}"
        )
        return cls(name, folder, hwid, config, data_dir, slots)

    # -- running the real client ----------------------------------------------------------------

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = CLIENT_TIMEOUT,
        ahead: timedelta | None = None,
    ) -> Outcome:
        """Run `ota-client` (with its wall clock `ahead` of real time, see `clock.py`)."""
        command = [str(BIN / "ota-client"), "--config", str(self.config_path), "--json", *args]
        env = env or client_env()
        if ahead is not None:
            command = clock_prefix(ahead) + command
            env = {**env, **clock.ENV}
        proc = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        outcome = Outcome(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        self.runs.append(outcome)
        return outcome

    def ok(self, *args: str) -> dict[str, Any]:
        return self.run(*args).json

    def provision(
        self, target_path: str, image: bytes, slot: str = "A", *, in_process: bool = True
    ) -> None:
        """The factory step: the image goes into `slot`, then `ota-client provision` records
        it (in-process by default, through the same library call the command makes: it is
        setup, not under attack, and saves a process start per test)."""
        self.slots[slot].write_bytes(image)
        self.slots[slot].chmod(0o600)
        if not in_process:
            self.ok("provision", "--slot", slot, "--target", target_path)
            return
        from client.config import load_config
        from client.device import Device
        from client.provision import provision

        old = os.umask(0o077)  # as the command line sets it
        try:
            device = Device(load_config(self.config_path))
            try:
                provision(device, slot, target_path)
            finally:
                device.close()
        finally:
            os.umask(old)

    # -- what the device trusts -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The client's own view of its state (in-process, through `client.device`)."""
        from client.config import load_config
        from client.device import Device

        device = Device(load_config(self.config_path))
        try:
            return device.status().to_json()
        finally:
            device.close()

    def events(self) -> list[dict[str, Any]]:
        path = self.data_dir / "events.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def verify_log(self) -> None:
        """The event log's hash chain holds (the client's own `EventLog.verify`)."""
        from client.eventlog import EventLog

        EventLog(self.data_dir / "events.log", self.name).verify()

    def metadata_digest(self) -> dict[str, str]:
        folder = self.data_dir / "metadata"
        return {
            str(p.relative_to(folder)): sha256(p.read_bytes())
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    def protected(self) -> dict[str, Any]:
        """Everything an attack must leave unchanged (each cached metadata file by its own
        key `metadata:<file>`, so a test can allow exactly the file an attacker holding that
        role's key may legitimately move)."""
        status = self.status()
        active = status["active_slot"]
        return {
            "active_slot": active,
            "active_bytes": sha256(self.slots[active].read_bytes())
            if self.slots[active].exists()
            else None,
            "installed_version": status["installed_version"],
            "security_counter": status["security_counter"],
            "trial_slot": status["trial_slot"],
            **{f"metadata:{k}": v for k, v in self.metadata_digest().items()},
        }

    def slot_holds(self, slot: str, image: bytes) -> bool:
        path = self.slots[slot]
        return path.exists() and sha256(path.read_bytes()) == sha256(image)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def _toml_table(table: dict[str, Any]) -> str:
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items() if v is not None)
