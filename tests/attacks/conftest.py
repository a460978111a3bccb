"""Fixtures for the red-team suite, and the summary line it prints.

`lab` gives a test an honest repository (`lab.repo`, a `RepositorySimulator` with firmware
1.0.0 for model-x and model-y), the malicious HTTPS server the device talks to (`lab.server`,
serving `lab.repo` until an attack points it elsewhere or adds rules), and a model-x device
provisioned with 1.0.0 in slot A (`lab.device`). `attack(device, name)` counts one attack (see
`toolkit/record.py`); `pytest tests/attacks` ends with
`attacks: N tried, N refused, 0 device changes` added up from those real outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.attacks.toolkit.device import LabDevice
from tests.attacks.toolkit.record import Attempt, Tally
from tests.attacks.toolkit.server import AttackServer
from tests.attacks.toolkit.simulator import RepositorySimulator, firmware_path
from tests.helpers.certs import TlsFiles, make_tls

TALLY = pytest.StashKey[Tally]()
HWID = "model-x"
V1 = firmware_path(HWID, "1.0.0")


def _tally(config: pytest.Config) -> Tally:
    if TALLY not in config.stash:
        config.stash[TALLY] = Tally()
    return config.stash[TALLY]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    tally = config.stash.get(TALLY, None)
    if tally is None or tally.tried == 0 or config.getoption("verbose") <= 0:
        return
    terminalreporter.section("red team")
    for line in tally.log:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The summary line comes last, after pytest's own result line."""
    tally = config.stash.get(TALLY, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if tally is not None and tally.tried and reporter is not None:
        reporter.write_line(tally.line())


@dataclass
class Lab:
    repo: RepositorySimulator
    server: AttackServer
    device: LabDevice
    tls: TlsFiles
    folder: Path

    def release(self, version: str, *, counter: int = 1, hwid: str = HWID, **kw: Any) -> str:
        """The honest publisher releases firmware; returns its target path."""
        path = self.repo.add_firmware(hwid, version, counter=counter, **kw)
        self.repo.publish()
        return path

    def recovers(self, version: str, *, attempts: int = 1, boot: bool = False) -> None:
        """Control: with the attack gone, the device takes the honest update (so the refusal
        the test saw was the attack's doing, not a broken setup). The honest repository first
        re-signs every role once, so its versions are not below anything an attacker holding
        the online keys made the device trust. `attempts` > 1 allows a failed resume first
        (a resumed download onto tampered bytes is refused once, then starts from zero)."""
        self.repo.publish(force=["targets", *self.repo.delegated])
        self.server.repo = self.repo
        self.server.calm()
        for _ in range(attempts):
            out = self.device.run("update")
            if out.returncode == 0:
                break
        assert out.json["version"] == version
        assert self.device.slot_holds(out.json["slot"], self.repo.images[out.json["target"]])
        if boot:
            assert self.device.ok("boot")["committed"] is True
            assert self.device.status()["installed_version"] == version

    def new_device(
        self,
        name: str,
        *,
        hwid: str = HWID,
        factory: str | None = V1,
        server: dict[str, Any] | None = None,
        boot: dict[str, Any] | None = None,
    ) -> LabDevice:
        dev = LabDevice.create(
            self.folder / name,
            server_url=self.server.url,
            ca_cert=self.tls.ca_cert,
            trusted_root=self.repo.history["root"][1],
            hwid=hwid,
            name=name,
            server=server,
            boot=boot,
        )
        if factory is not None:
            dev.provision(factory, self.repo.images[factory])
        return dev


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Certificates valid for a year: a freeze test runs the device's clock weeks ahead."""
    # valid for a year: the device checks the server certificate with its own clock, which
    # freeze tests move weeks ahead (toolkit/clock.py)
    return make_tls(tmp_path_factory.mktemp("tls"), validity=timedelta(days=365))


@pytest.fixture
def repo() -> RepositorySimulator:
    sim = RepositorySimulator(("model-x", "model-y"))
    sim.add_firmware("model-x", "1.0.0", counter=1)
    sim.add_firmware("model-y", "1.0.0", counter=1)
    sim.publish()
    return sim


@pytest.fixture
def server(repo: RepositorySimulator, tls_files: TlsFiles) -> Iterator[AttackServer]:
    srv = AttackServer(repo, tls_files.server_cert, tls_files.server_key).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def lab(
    repo: RepositorySimulator, server: AttackServer, tls_files: TlsFiles, tmp_path: Path
) -> Lab:
    partial = Lab(repo, server, None, tls_files, tmp_path)  # type: ignore[arg-type]
    partial.device = partial.new_device("dev-1")
    return partial


@pytest.fixture
def attack(request: pytest.FixtureRequest) -> Callable[..., Attempt]:
    tally = _tally(request.config)

    def start(device: LabDevice, name: str | None = None, **kw: Any) -> Attempt:
        return Attempt(tally, device, name or request.node.name, **kw)

    return start
