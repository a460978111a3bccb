"""`ota-client run` (interval, jitter, SIGTERM), resumable downloads across a stop, the report
queue, and the transport options (client certificates, token)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ota_device import BIN, PASSPHRASE, TOKEN, DeviceHandle, Lab, client_env
from tests.helpers.repo import assert_one_line_error
from tests.helpers.tls_static_server import TlsStaticServer

AGENT = """
[agent]
interval = 0.2
jitter = 0.1
max_backoff = 0.5
"""


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    lab.server.start()
    try:
        yield lab
    finally:
        lab.server.stop()  # whichever server the test left running


def _start_agent(dev: DeviceHandle) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "ota-client"), "--config", str(dev.config_path), "run"],
        env=client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def _wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def _download_offset(dev: DeviceHandle) -> int:
    try:
        return int(json.loads((dev.data_dir / "download.json").read_text())["offset"])
    except (OSError, ValueError, KeyError):
        return 0


def test_agent_installs_then_stops_cleanly_on_sigterm(lab: Lab) -> None:
    v1 = lab.publish("1.0.0")
    lab.publish("2.0.0")
    dev = lab.device(factory=v1, extra=AGENT)
    agent = _start_agent(dev)
    _wait_for(lambda: dev.status()["trial_slot"] == "B")
    code, out, err = _stop(agent)
    assert code == 0, err
    assert out.startswith("stopped after ") and "check(s)" in out
    assert "Traceback" not in err
    assert dev.json("boot")["version"] == "2.0.0"


def test_sigterm_during_a_download_stops_it_and_the_next_run_resumes(lab: Lab) -> None:
    v1 = lab.publish("1.0.0")
    v2 = lab.publish("2.0.0", size=4 * 1024 * 1024)
    lab.server.set_faults({"throttle": {"fw-2.0.0": 512 * 1024}})
    dev = lab.device(factory=v1, extra=AGENT)
    agent = _start_agent(dev)
    _wait_for(lambda: _download_offset(dev) > 0)
    code, _, err = _stop(agent)
    assert code == 0, err
    assert "the download will resume" in err
    stopped_at = _download_offset(dev)
    assert 0 < stopped_at < len(lab.published[v2])
    assert dev.status()["trial_slot"] is None
    lab.server.set_faults({})
    lab.server.reset_log()
    assert dev.json("update")["version"] == "2.0.0"
    firmware = [r for r in lab.server.requests() if "fw-2.0.0" in r["path"]]
    assert [r["range"] for r in firmware] == [f"bytes={stopped_at}-"]
    assert firmware[0]["bytes"] == len(lab.published[v2]) - stopped_at
    assert dev.json("boot")["version"] == "2.0.0"


def test_reports_stay_queued_until_the_server_accepts_them(lab: Lab) -> None:
    v1 = lab.publish("1.0.0")
    lab.publish("2.0.0")
    dev = lab.device(factory=v1)
    lab.server.set_faults({"reports_status": 503})
    assert dev.json("update")["result"] == "installed"  # the update does not care
    assert dev.json("boot")["committed"]
    assert dev.status()["reports_queued"] == 2
    assert lab.server.reports() == []
    lab.server.set_faults({})
    dev.json("check")
    assert [r["event"] for r in lab.server.reports()] == ["install", "commit"]
    assert dev.status()["reports_queued"] == 0


def test_client_certificate_and_token(lab: Lab, tmp_path: Path) -> None:
    v1 = lab.publish("1.0.0")
    lab.publish("2.0.0")
    lab.server.stop()
    lab.server = TlsStaticServer(
        lab.repo_dir,
        tmp_path / "mtls-state",
        lab.tls.server_cert,
        lab.tls.server_key,
        client_ca=lab.tls.ca_cert,
        token=TOKEN,
    )
    lab.server.start()
    tls = lab.tls
    dev = lab.device(
        factory=None, server=f'client_cert = "{tls.client_cert}"\nclient_key = "{tls.client_key}"'
    )
    dev.slots["A"].write_bytes(lab.published[v1])
    dev.run("provision", "--slot", "A", "--target", v1, check=True)
    assert dev.json("update")["version"] == "2.0.0"

    # without the certificate the server refuses the TLS handshake
    with_cert = dev.config_path.read_text()
    no_cert = "\n".join(
        line
        for line in with_cert.splitlines()
        if not line.startswith(("client_cert =", "client_key ="))
    )
    dev.config_path.write_text(no_cert)
    assert_one_line_error(dev.run("check"), "metadata refresh failed", "TLS verification failed")
    # a client key others can read is refused before any connection
    dev.config_path.write_text(with_cert)
    tls.client_key.chmod(0o644)
    assert_one_line_error(dev.run("check"), f"client key {tls.client_key} has mode 0644")
    tls.client_key.chmod(0o600)
    # a wrong token is refused by the server
    (dev.folder / "etc" / "token").write_text("not-the-token\n")
    assert_one_line_error(dev.run("check"), "metadata refresh failed", "HTTP 401")


def test_a_server_trickling_bytes_is_cut_off(lab: Lab) -> None:
    """Slow retrieval: below the configured minimum rate after the grace period, the download
    stops with a clear error; what arrived is kept for a resume."""
    v1 = lab.publish("1.0.0")
    v2 = lab.publish("2.0.0", size=4 * 1024 * 1024)
    lab.server.set_faults({"throttle": {"fw-2.0.0": 600 * 1024}})
    dev = lab.device(factory=v1, server="min_rate_bytes = 4000000\nmin_rate_grace_seconds = 1.0")
    before = dev.snapshot()
    proc = dev.run("update")
    assert_one_line_error(
        proc, f"download of {v2} failed (it will resume):", "transfer slower than 4000000 B/s"
    )
    assert dev.snapshot() == before
    assert 0 < _download_offset(dev) < len(lab.published[v2])


def test_the_whole_download_is_time_bounded(lab: Lab) -> None:
    """A server that keeps a read blocked (one byte now and then) is cut off when the whole
    transfer exceeds max_download_seconds, not only between chunks."""
    v1 = lab.publish("1.0.0")
    v2 = lab.publish("2.0.0", size=1024 * 1024)
    lab.server.set_faults({"throttle": {"fw-2.0.0": 2000}})
    dev = lab.device(factory=v1, server="max_download_seconds = 1.5")
    proc = dev.run("update")
    assert_one_line_error(
        proc, f"download of {v2} failed (it will resume):", "transfer took longer than 1.5 s"
    )


def test_resume_falls_back_to_a_full_download_when_ranges_are_ignored(lab: Lab) -> None:
    v1 = lab.publish("1.0.0")
    v2 = lab.publish("2.0.0", size=2 * 1024 * 1024)
    name = v2.rpartition("/")[2]
    dev = lab.device(factory=v1)
    lab.server.set_faults({"cut_after": {name: 1024 * 1024}})
    assert dev.run("update").returncode == 1
    assert _download_offset(dev) > 0
    lab.server.set_faults({"ignore_range": [name]})
    lab.server.reset_log()
    assert dev.json("update")["version"] == "2.0.0"
    [fetch] = [r for r in lab.server.requests() if name in r["path"]]
    assert (fetch["range"] is not None, fetch["status"], fetch["bytes"]) == (
        True,
        200,
        len(lab.published[v2]),
    )
    assert dev.json("boot")["version"] == "2.0.0"
