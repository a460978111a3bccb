"""A lab for device-client tests: a dev repository served over TLS and devices driven as real
`ota-client` processes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.tls_static_server import TlsStaticServer

BIN = Path(sys.executable).parent
PASSPHRASE = "correct horse battery staple"
TOKEN = "device-token-0123456789abcdef"
HWID = "model-x"

# The health check a "booted" image must pass: a broken build starts with BAD!.
HEALTH_CHECK = """#!/bin/sh
head -c 4 "$OTA_SLOT_PATH" | grep -q 'BAD!' && exit 3
exit 0
"""


def image(version: str, size: int = 64 * 1024, *, healthy: bool = True) -> bytes:
    """Deterministic firmware bytes for `version`."""
    head = (b"GOOD" if healthy else b"BAD!") + f" firmware {version}\n".encode()
    body = random.Random(version).randbytes(max(0, size - len(head)))
    return head + body


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def client_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("OTA_") and k != "TEST_SERVER_TOKEN"
    }
    env.update(extra)
    return env


@dataclass
class DeviceHandle:
    """One simulated device: a config file, a private data dir and two slot files."""

    name: str
    folder: Path
    config_path: Path
    data_dir: Path
    slots: dict[str, Path]

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / "ota-client"), "--config", str(self.config_path), *args],
            env=env or client_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ota-client {' '.join(args)} failed: {proc.stderr}")
        return proc

    def json(self, *args: str, **kw: Any) -> dict[str, Any]:
        proc = self.run(*args, "--json", check=True, **kw)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def status(self) -> dict[str, Any]:
        return self.json("status")

    def active_bytes(self) -> bytes:
        return self.slots[self.status()["active_slot"]].read_bytes()

    def events(self) -> list[dict[str, Any]]:
        path = self.data_dir / "events.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def metadata_digest(self) -> dict[str, str]:
        out = {}
        for path in sorted((self.data_dir / "metadata").rglob("*")):
            if path.is_file():
                out[str(path.relative_to(self.data_dir))] = sha256(path.read_bytes())
        return out

    def snapshot(self) -> dict[str, Any]:
        """What must not change on a refusal."""
        status = self.status()
        return {
            "active_slot": status["active_slot"],
            "active_bytes": sha256(self.slots[status["active_slot"]].read_bytes()),
            "installed_version": status["installed_version"],
            "security_counter": status["security_counter"],
            "trial": status["trial_slot"],
            "metadata": self.metadata_digest(),
        }


@dataclass
class Lab:
    """A repository (dev keys) served over TLS, and helpers to publish firmware and make devices.

    Needs `OTA_KEY_PASSPHRASE` in the environment of this process (monkeypatch it).
    """

    folder: Path
    repo_dir: Path
    tls: TlsFiles
    server: TlsStaticServer
    devices: list[DeviceHandle] = field(default_factory=list)
    published: dict[str, bytes] = field(default_factory=dict)
    publishers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, folder: Path) -> Lab:
        from repository.create import init_dev

        repo_dir = folder / "repo"
        init_dev(repo_dir)
        tls = make_tls(folder / "tls")
        server = TlsStaticServer(
            repo_dir, folder / "server-state", tls.server_cert, tls.server_key, token=TOKEN
        )
        return cls(folder, repo_dir, tls, server)

    def delegate(self, hwid: str, *, terminating: bool = True) -> None:
        """Delegate `firmware/<hwid>/*` from top-level targets to a role named `hwid`, with an
        in-memory publisher key (as a security team would for a publisher)."""
        from securesystemslib.signer import CryptoSigner
        from tuf.api.metadata import DelegatedRole, Delegations

        from repository.manager import OtaRepository

        signer = CryptoSigner.generate_ed25519()
        repo = OtaRepository.load(self.repo_dir)
        with repo.writing("delegate"):
            with repo.edit_targets() as targets:
                if targets.delegations is None:
                    targets.delegations = Delegations(keys={}, roles={})
                assert targets.delegations.roles is not None
                targets.delegations.roles[hwid] = DelegatedRole(
                    hwid, [], 1, terminating, paths=[f"firmware/{hwid}/*"]
                )
                targets.add_key(signer.public_key, hwid)
            repo.publish_snapshot_and_timestamp()
        self.publishers[hwid] = signer

    def publish(
        self,
        version: str,
        *,
        hwid: str = HWID,
        counter: int = 0,
        data: bytes | None = None,
        size: int = 64 * 1024,
        healthy: bool = True,
        path: str | None = None,
        custom: dict[str, Any] | None = None,
        role: str = "targets",
        replace: bool = False,
    ) -> str:
        """Publish one firmware target in `role`; returns its target path.

        `replace` lists a published path with other bytes, which `ota-repo` refuses: a
        repository holding its keys can still sign that, and it is the client that is tested.
        """
        from repository.manager import OtaRepository

        data = image(version, size, healthy=healthy) if data is None else data
        target_path = path or f"firmware/{hwid}/fw-{version}.bin"
        src = self.folder / "build" / target_path.replace("/", "_")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        if custom is None:
            custom = {
                "firmware": {
                    "version": version,
                    "hardware_ids": [hwid],
                    "security_counter": counter,
                }
            }
        repo = OtaRepository.load(self.repo_dir)
        if role == "targets" and not replace:
            repo.add_targets([(src, target_path, custom)])
        else:  # as a publisher would: sign the role's next version with its key
            from repository.targetfiles import store_target_file

            if role != "targets":
                repo.extra_signers[role] = [self.publishers[role]]
            with repo.writing("add-target"):
                target = store_target_file(repo.paths.targets, src, target_path, custom)
                with repo.edit_targets(role) as targets:
                    targets.targets[target_path] = target
                repo.publish_snapshot_and_timestamp()
        self.published[target_path] = data
        return target_path

    def served_file(self, target_path: str) -> Path:
        """The file the server sends for `target_path` (consistent-snapshot name)."""
        directory, _, name = target_path.rpartition("/")
        digest = sha256(self.published[target_path])
        return self.repo_dir / "targets" / directory / f"{digest}.{name}"

    def device(
        self,
        name: str = "dev-1",
        *,
        factory: str | None = None,
        extra: str = "",
        boot: str = "",
        server: str = "",
        max_tries: int = 3,
        url: str | None = None,
        token: str = TOKEN,
    ) -> DeviceHandle:
        """A device with the factory image `factory` (a published target path) in slot A,
        provisioned through `ota-client provision` when given."""
        folder = self.folder / "devices" / name
        etc = folder / "etc"
        etc.mkdir(parents=True)
        shutil.copy(self.repo_dir / "metadata" / "1.root.json", etc / "root.json")
        token_file = etc / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        url = url or self.server.url
        health = etc / "health-check"
        health.write_text(HEALTH_CHECK)
        health.chmod(0o755)
        slots = {"A": folder / "slot-a.img", "B": folder / "slot-b.img"}
        data_dir = folder / "data"
        config = etc / "ota-client.toml"
        config.write_text(f"""\
device_id = "{name}"
hardware_id = "{HWID}"
data_dir = "{data_dir}"
trusted_root = "root.json"
{extra}
[server]
metadata_url = "{url}/metadata/"
targets_url = "{url}/targets/"
reports_url = "{url}/api/v1/reports"
ca_bundle = "{self.tls.ca_cert}"
token_file = "token"
read_timeout = 10
{server}

[slots]
A = "{slots["A"]}"
B = "{slots["B"]}"

[boot]
max_tries = {max_tries}
health_check = ["{health}"]
health_timeout = 30
{boot}
""")
        handle = DeviceHandle(name, folder, config, data_dir, slots)
        if factory is not None:
            slots["A"].write_bytes(self.published[factory])
            slots["A"].chmod(0o600)
            handle.run("provision", "--slot", "A", "--target", factory, check=True)
        self.devices.append(handle)
        return handle
