"""Attacks by a man in the middle in front of the *real* update server.

The repository is made by the real manager, firmware is published through the real upload API
of the real server (gunicorn over TLS, device authentication on), and the device talks to it
through the attacker's proxy (`UpstreamMirror` + `AttackServer`), which forwards the device's
token and rewrites genuine answers. The same chain without the attack installs the update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from repository.devices import add_device
from repository.layout import RepoPaths
from repository.publisher.upload import upload_role
from tests.attacks.toolkit.device import LabDevice
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.server import AttackServer, UpstreamMirror, replace_bytes, serve_bytes
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.repo import PASSPHRASE
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

FAILED_CHECK = {"event": "check", "result": "failed"}


def firmware(version: str) -> bytes:
    return f"GOOD real-server firmware {version}\n".encode() * 300


@dataclass
class RealChain:
    repo: DelegatedRepo
    server_url: str
    server_tls: TlsFiles
    proxy: AttackServer
    mirror: UpstreamMirror
    device: LabDevice
    folder: Path

    def publish(self, version: str, counter: int = 1) -> str:
        path = f"firmware/model-x/fw-{version}.bin"
        custom = {
            "firmware": {
                "version": version,
                "hardware_ids": ["model-x"],
                "security_counter": counter,
            }
        }
        metadata, files = publisher_update(
            self.repo,
            "model-x",
            {path: firmware(version)},
            custom=custom,
            tmp=self.folder / "pub" / version,
        )
        upload_role(self.server_url, "model-x", metadata, files, ca_bundle=self.server_tls.ca_cert)
        return path


@pytest.fixture
def chain(
    tmp_path: Path, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RealChain]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    repo = make_delegated_repo(tmp_path / "repo", ("model-x",))
    token = add_device(RepoPaths(repo.root), "dev-real", "model-x")
    server_tls = make_tls(tmp_path / "server-tls")
    with run_gunicorn(
        repo.root,
        cert=server_tls.server_cert,
        key=server_tls.server_key,
        ca_cert=server_tls.ca_cert,
        config={"upload_tokens": False},
        log_dir=tmp_path,
    ) as server:
        mirror = UpstreamMirror(server.url, server_tls.ca_cert, token)
        proxy = AttackServer(mirror, tls_files.server_cert, tls_files.server_key).start()
        try:
            dev = LabDevice.create(
                tmp_path / "dev",
                server_url=proxy.url,
                ca_cert=tls_files.ca_cert,
                trusted_root=repo.trusted_root,
                name="dev-real",
            )
            real = RealChain(repo, server.url, server_tls, proxy, mirror, dev, tmp_path)
            v1 = real.publish("1.0.0")
            dev.provision(v1, firmware("1.0.0"), in_process=False)
            yield real
        finally:
            proxy.stop()


def test_arbitrary_software_swapped_by_proxy_before_real_server(
    chain: RealChain, attack: Callable[..., Attempt]
) -> None:
    path = chain.publish("2.0.0")
    chain.proxy.attack("targets/firmware/model-x/*", replace_bytes(10, b"EVIL"))
    with attack(
        chain.device,
        may_change=("metadata:timestamp.json", "metadata:snapshot.json", "metadata:model-x.json"),
    ) as a:
        out = chain.device.run("update")
        a.refused(
            out,
            f"refused {path}",
            "slot B does not hold",
            event={"event": "verify", "result": "failed"},
        )
    chain.proxy.calm()  # control: the genuine bytes through the same proxy install
    assert chain.device.ok("update")["version"] == "2.0.0"
    assert chain.device.ok("boot")["committed"] is True


def test_rollback_attack_replayed_by_proxy_before_real_server(
    chain: RealChain, attack: Callable[..., Attempt]
) -> None:
    old = chain.mirror.seen["metadata/timestamp.json"][0]
    chain.publish("2.0.0")
    assert chain.device.ok("check")["update_available"] is True  # the device saw the new one
    chain.publish("3.0.0")
    chain.proxy.attack("metadata/timestamp.json", serve_bytes(old))
    with attack(chain.device) as a:
        out = chain.device.run("update")
        a.refused(out, "BadVersionNumberError", "New timestamp version", event=FAILED_CHECK)
    chain.proxy.calm()
    assert chain.device.ok("update")["version"] == "3.0.0"
