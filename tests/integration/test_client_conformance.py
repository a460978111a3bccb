"""The conformance adapter (tests/conformance_client.py) speaks the tuf-conformance client CLI
protocol over the device client's TUF code path: checked here against a real repository over
HTTP, as the suite would drive it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers.ota_device import PASSPHRASE, Lab, client_env
from tests.helpers.tls_static_server import TlsStaticServer

ADAPTER = Path(__file__).resolve().parents[1] / "conformance_client.py"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    lab.server = TlsStaticServer(lab.repo_dir, tmp_path / "http-state", None, None)
    with lab.server:
        yield lab


class Adapter:
    def __init__(self, lab: Lab, tmp: Path):
        self.lab = lab
        self.md = tmp / "client" / "metadata"
        self.td = tmp / "client" / "targets"
        self.md.mkdir(parents=True)
        self.td.mkdir(parents=True)

    def __call__(self, *args: str) -> int:
        proc = subprocess.run(
            [sys.executable, str(ADAPTER), *args],
            env=client_env(),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode

    def init(self) -> int:
        trusted = self.md.parent / "initial_root.json"
        trusted.write_bytes((self.lab.repo_dir / "metadata" / "1.root.json").read_bytes())
        return self("--metadata-dir", str(self.md), "init", str(trusted))

    def refresh(self) -> int:
        return self(
            "--metadata-url",
            f"{self.lab.server.url}/metadata",
            "--metadata-dir",
            str(self.md),
            "refresh",
        )

    def download(self, *names: str) -> int:
        opts = [a for n in names for a in ("--target-name", n)]
        return self(
            "--metadata-url",
            f"{self.lab.server.url}/metadata",
            "--metadata-dir",
            str(self.md),
            *opts,
            "--target-dir",
            str(self.td),
            "--target-base-url",
            f"{self.lab.server.url}/targets",
            "download",
        )

    def json_files(self) -> set[str]:
        return {p.name for p in self.md.iterdir() if p.name.endswith(".json")}


def _served(lab: Lab, role: str) -> bytes:
    if role == "timestamp":
        return (lab.repo_dir / "metadata" / "timestamp.json").read_bytes()
    newest = max(
        lab.repo_dir.glob(f"metadata/*.{role}.json"), key=lambda p: int(p.name.split(".")[0])
    )
    return newest.read_bytes()


def test_init_refresh_download_and_cache(lab: Lab, tmp_path: Path) -> None:
    a = lab.publish("1.0.0")
    b = lab.publish("2.0.0")
    client = Adapter(lab, tmp_path)
    assert client.init() == 0
    assert lab.server.requests() == []  # init makes no request
    assert client.refresh() == 0
    assert client.json_files() == {"root.json", "timestamp.json", "snapshot.json", "targets.json"}
    for role in ("root", "timestamp", "snapshot", "targets"):
        assert (client.md / f"{role}.json").read_bytes() == _served(lab, role)

    assert client.download(a, b) == 0
    assert {p.name for p in client.td.iterdir()} == {quote(a, ""), quote(b, "")}
    assert (client.td / quote(a, "")).read_bytes() == lab.published[a]

    lab.server.reset_log()
    assert client.download(a) == 0  # unchanged: not fetched again
    assert not [r for r in lab.server.requests() if "/targets/" in r["path"]]

    new = lab.publish("1.0.0", data=b"changed bytes", path=a, replace=True)
    assert client.download(new) == 0
    assert (client.td / quote(a, "")).read_bytes() == b"changed bytes"
    assert {p.name for p in client.td.iterdir()} == {quote(a, ""), quote(b, "")}


def test_delegated_roles_are_fetched_only_when_a_lookup_needs_them(
    lab: Lab, tmp_path: Path
) -> None:
    lab.delegate("model-x")
    fw = lab.publish("1.0.0", role="model-x")
    client = Adapter(lab, tmp_path)
    assert client.init() == 0 and client.refresh() == 0
    assert "model-x.json" not in client.json_files()
    assert client.download(fw) == 0
    assert (client.md / "model-x.json").read_bytes() == _served(lab, "model-x")
    assert (client.td / quote(fw, "")).read_bytes() == lab.published[fw]


def test_every_failure_exits_1_and_leaves_nothing_behind(lab: Lab, tmp_path: Path) -> None:
    fw = lab.publish("1.0.0")
    client = Adapter(lab, tmp_path)
    assert client("init") == 1  # argparse would say 2
    assert client("--metadata-dir", str(client.md), "frobnicate") == 1
    assert client.init() == 0
    assert (
        client(
            "--metadata-url",
            f"{lab.server.url}/nothing-here",
            "--metadata-dir",
            str(client.md),
            "refresh",
        )
        == 1
    )
    assert client.refresh() == 0
    assert client.download("firmware/model-x/missing.bin") == 1
    lab.served_file(fw).write_bytes(b"tampered")
    assert client.download(fw) == 1
    assert list(client.td.iterdir()) == []
    lab.server.set_faults({"extra_bytes": {"fw-1.0.0.bin": 10}})
    lab.served_file(fw).write_bytes(lab.published[fw])
    assert client.download(fw) == 1
    assert list(client.td.iterdir()) == []
    lab.server.set_faults({})
    assert client.download(fw) == 0
