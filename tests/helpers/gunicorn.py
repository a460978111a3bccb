"""Run the real update server under gunicorn over TLS on 127.0.0.1 for a test.

    with run_gunicorn(repo, cert=tls.server_cert, key=tls.server_key) as server:
        requests.get(f"{server.url}/metadata/timestamp.json", verify=tls.ca_cert)

The server is a separate process group started with the shipped config
(`-c python:repository.server.gunicorn_conf`); it binds port 0 and the chosen port is read
back from gunicorn's own log line. It is stopped by PID (SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.helpers.repo import PASSPHRASE

BIN = Path(sys.executable).parent
_LISTENING = re.compile(r"Listening at: https?://127\.0\.0\.1:(\d+)")


@dataclass
class GunicornServer:
    url: str  # base URL, no trailing slash: https://127.0.0.1:PORT
    pid: int
    log: Path
    ca_cert: Path | None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_for_port(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> int:
    while time.monotonic() < deadline:
        m = _LISTENING.search(log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn did not start listening:\n{log.read_text()}")


def _wait_healthy(
    url: str, ca_cert: Path | None, client: tuple[Path, Path] | None, deadline: float
) -> None:
    verify: bool | str = str(ca_cert) if ca_cert else True
    cert = (str(client[0]), str(client[1])) if client else None
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{url}/healthz", verify=verify, cert=cert, timeout=5)
            if r.status_code in (200, 503):  # 503: published metadata stale, server is up
                return
            last = r.status_code
        except requests.RequestException as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn did not answer /healthz: {last}")


def stop_pid(proc: subprocess.Popen[bytes], timeout: float = 15, *, graceful: bool = False) -> None:
    """Stop a gunicorn master we started by its PID: SIGINT (quick) or SIGTERM (graceful),
    wait, then SIGKILL its process group (it runs in its own session)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM if graceful else signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


@contextmanager
def run_gunicorn(
    repo: Path,
    *,
    cert: Path | None,
    key: Path | None,
    ca_cert: Path | None = None,
    device_ca: Path | None = None,
    mtls: str = "required",
    config: dict[str, Any] | None = None,
    workers: int = 1,
    threads: int = 4,
    env: dict[str, str] | None = None,
    health_client_cert: tuple[Path, Path] | None = None,
    log_dir: Path | None = None,
    startup_timeout: float = 30,
) -> Iterator[GunicornServer]:
    """Start gunicorn serving `repo` with the shipped config; yield where it listens.

    Args:
        repo: the repository folder (OTA_REPO).
        cert, key: server certificate and key; both None serves plain HTTP (OTA_PLAINTEXT).
        ca_cert: CA that issued `cert` (used to check readiness; given back on the result).
        device_ca: CA of device certificates: turns mutual TLS on (`mtls` required/optional).
        config: server settings passed to `create_app(config)` (e.g. {"device_auth": False}).
        workers, threads: gunicorn worker processes and threads each.
        env: extra environment (the dev key passphrase is set already).
        health_client_cert: client cert/key for the readiness probe under required mTLS.
        log_dir: where gunicorn's log goes (default: next to `repo`).
    """
    log = (log_dir or repo.parent) / f"gunicorn-{os.getpid()}-{time.monotonic_ns()}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    full_env.update(
        OTA_REPO=str(repo),
        OTA_BIND="127.0.0.1:0",
        OTA_WORKERS=str(workers),
        OTA_THREADS=str(threads),
        OTA_KEY_PASSPHRASE=PASSPHRASE,
    )
    if cert is None or key is None:
        full_env["OTA_PLAINTEXT"] = "1"
    else:
        full_env.update(OTA_TLS_CERT=str(cert), OTA_TLS_KEY=str(key))
    if device_ca is not None:
        full_env.update(OTA_DEVICE_CA=str(device_ca), OTA_MTLS=mtls)
    full_env.update(env or {})
    app = (
        f"repository.server:create_app({config!r})" if config else "repository.server:create_app()"
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:repository.server.gunicorn_conf", app],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout
        port = _wait_for_port(proc, log, deadline)
        scheme = "http" if cert is None else "https"
        url = f"{scheme}://127.0.0.1:{port}"
        _wait_healthy(url, ca_cert, health_client_cert, deadline)
        yield GunicornServer(url=url, pid=proc.pid, log=log, ca_cert=ca_cert)
    finally:
        stop_pid(proc)
