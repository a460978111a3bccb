"""Slow clients against the real server (gunicorn over TLS with the shipped configuration).

While an attacker holds 200 connections of each kind (pre-TLS bytes, idle TCP, slow headers,
slow authenticated upload body), normal device traffic is still answered: `/healthz`, a
metadata GET and a real `ota-client check`, each on a new connection, each within a generous
bound (10 s; the benchmark measures the latency). The server logs what it drops, and one
address cannot hold more than its share of connections.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers.ota_device import PASSPHRASE, Lab
from tests.helpers.slow_clients import KINDS, SlowClients

pytest.importorskip("repository.server")

PER_KIND = 200
BOUND = 10.0  # seconds a normal request may take under attack (generous: no timing assert)
ATTACK_SECONDS = 16.0  # longer than the handshake, header and body deadlines


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _get(url: str, ca: Path, token: str) -> int:
    with requests.Session() as s:  # a new connection and TLS handshake, as a device's visit
        s.trust_env = False
        r = s.get(url, verify=str(ca), timeout=BOUND, headers={"Authorization": f"Bearer {token}"})
        return r.status_code


def test_normal_requests_answered_while_slow_clients_hold_hundreds_of_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repository.devices import add_device, add_uploader
    from repository.layout import RepoPaths
    from tests.helpers.gunicorn import run_gunicorn

    _raise_nofile(4 * PER_KIND + 512)
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    v1 = lab.publish("1.0.0", counter=1)
    paths = RepoPaths(lab.repo_dir.resolve())
    token = add_device(paths, "dev-s1", "model-x")
    upload_token = add_uploader(paths, "ci", ["targets"])
    body_head = (
        "POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {upload_token}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with run_gunicorn(
        lab.repo_dir,
        cert=lab.tls.server_cert,
        key=lab.tls.server_key,
        ca_cert=lab.tls.ca_cert,
        workers=2,
        threads=4,
    ) as server:
        dev = lab.device("dev-s1", url=server.url, token=token)
        dev.slots["A"].write_bytes(lab.published[v1])
        dev.run("provision", "--slot", "A", "--target", v1, check=True)
        port = urlsplit(server.url).port
        assert port is not None
        failures: list[str] = []
        answered = 0
        # the attacks that need a TLS handshake first, then those that never finish one
        tls_attack = SlowClients(
            "127.0.0.1",
            port,
            lab.tls.ca_cert,
            kinds={"slow-headers": PER_KIND, "slow-body": PER_KIND},
            body_head=body_head,
            max_seconds=ATTACK_SECONDS + 90,
        )
        raw_attack = SlowClients(
            "127.0.0.1",
            port,
            lab.tls.ca_cert,
            kinds={"pre-tls": PER_KIND, "idle": PER_KIND},
            max_seconds=ATTACK_SECONDS + 60,
        )
        with tls_attack, raw_attack.after(tls_attack.wait_held):
            held = tls_attack.held() + raw_attack.wait_held()
            end = time.monotonic() + ATTACK_SECONDS
            while time.monotonic() < end and len(failures) < 3:
                for what, url in (
                    ("healthz", f"{server.url}/healthz"),
                    ("timestamp", f"{server.url}/metadata/timestamp.json"),
                ):
                    try:
                        status = _get(url, lab.tls.ca_cert, token)
                        if status != 200:
                            failures.append(f"{what}: HTTP {status}")
                        answered += 1
                    except requests.RequestException as e:
                        failures.append(f"{what}: {type(e).__name__}: {e}")
                try:
                    check = dev.run("--json", "check", timeout=3 * BOUND)
                    if check.returncode != 0:
                        failures.append(f"ota-client check: {check.stderr.strip()}")
                    answered += 1
                except subprocess.TimeoutExpired as e:
                    failures.append(f"ota-client check: {e}")
            still_held = tls_attack.held() + raw_attack.held()
        log = server.log_text()
    assert failures == [], failures
    assert answered >= 6
    assert all(held[k] >= 0.9 * PER_KIND for k in KINDS), held
    # the attack was really held all along: the server closed old ones, they came back
    assert all(still_held[k] >= 0.5 * PER_KIND for k in KINDS), still_held
    for phrase in (
        "TLS handshake not done",  # pre-TLS bytes and idle TCP
        "request head not received",  # slow headers
        "request body too slow",  # the authenticated slow upload body
    ):
        assert f": {phrase} (" in log, phrase
    assert "Traceback" not in log
    assert "dropped connection from 127.0.1." in log  # with the attacker's address


def test_one_address_cannot_hold_more_than_its_cap(tmp_path: Path) -> None:
    from tests.helpers.certs import make_tls
    from tests.helpers.gunicorn import run_gunicorn
    from tests.helpers.server_repo import make_delegated_repo

    tls = make_tls(tmp_path / "tls")
    repo = make_delegated_repo(tmp_path / "repo")
    cap = 8
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        workers=1,
        threads=4,
        env={"OTA_MAX_CONNS_PER_IP": str(cap)},
    ) as server:
        port = urlsplit(server.url).port
        assert port is not None
        held: list[socket.socket] = []
        closed = 0
        try:
            with selectors.DefaultSelector() as sel:
                for _ in range(cap + 4):
                    s = socket.create_connection(
                        ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
                    )
                    held.append(s)
                    sel.register(s, selectors.EVENT_READ)
                deadline = time.monotonic() + 4  # the refused ones are closed at once
                while time.monotonic() < deadline and closed < 4:
                    for key, _ in sel.select(timeout=0.2):
                        sel.unregister(key.fileobj)
                        try:
                            closed += key.fileobj.recv(1) == b""  # type: ignore[union-attr]
                        except ConnectionResetError:
                            closed += 1
            # another address is still served
            r = requests.get(f"{server.url}/healthz", verify=str(tls.ca_cert), timeout=BOUND)
        finally:
            for s in held:
                s.close()
        log = server.log_text()
    assert closed >= 4, closed
    assert r.status_code in (200, 503)
    refused = "dropped connection from 127.0.0.2: too many connections from this address"
    assert f"{refused} (cap {cap})" in log


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTA_HANDSHAKE_TIMEOUT", "soon"), ("OTA_MAX_CONNS_PER_IP", "-5")],
    ids=["handshake-word", "cap-negative"],
)
def test_bad_connection_limit_stops_the_start_with_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    from tests.helpers.certs import make_tls
    from tests.helpers.gunicorn import BIN

    tls = make_tls(tmp_path / "tls")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env.update(
        OTA_REPO=str(tmp_path / "no-repo"),
        OTA_BIND="127.0.0.1:0",
        OTA_TLS_CERT=str(tls.server_cert),
        OTA_TLS_KEY=str(tls.server_key),
        **{name: value},
    )
    proc = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "python:repository.server.gunicorn_conf", "x:y"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"ota-server: {name} must be " in proc.stderr
    assert f"not {value!r}" in proc.stderr
