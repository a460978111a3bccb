#!/usr/bin/env python3
"""Update server throughput: gunicorn (this project's app) as a ratio of nginx, same run.

Both serve the same repository folder over TLS (same certificate, TLS 1.2+ defaults of each,
keep-alive) on 127.0.0.1 with the same number of worker processes; the load generator is a
separate process (`wrk` from Debian if installed, else a bounded Python generator). Measured:

    timestamp.json  with device authentication ON in our server (bearer token, registry lookup,
                    path checks, audit line per request) vs nginx serving the file statically
    1 MiB target    the same, for a hash-prefixed firmware target

For reference it also runs a plain Flask `send_from_directory` app (no auth, no audit) under the
same gunicorn settings. Every response must be a 200 or the run fails.

Usage: bench/bench_server.py [--seconds 4] [--rounds 3] [--connections 32] [--workers N]
                             [--threads 8]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TARGET = "firmware/model-x/fw-1.0.0.bin"
PASSPHRASE = "bench-only"  # noqa: S105 - a throwaway repository deleted after the run


def plain_flask_app(repo: str) -> Any:
    """The reference: Flask's `send_from_directory`, nothing else (no auth, no audit)."""
    from flask import Flask, send_from_directory

    app = Flask(__name__, static_folder=None)

    @app.get("/metadata/<path:name>")
    def metadata(name: str) -> Any:
        return send_from_directory(Path(repo) / "metadata", name)

    @app.get("/targets/<path:name>")
    def targets(name: str) -> Any:
        return send_from_directory(Path(repo) / "targets", name)

    return app


def make_cert(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, cert: Path, headers: dict[str, str], deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, verify=str(cert), headers=headers, timeout=2)
            if r.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def start_nginx(tmp: Path, repo: Path, cert: Path, key: Path, port: int, workers: int) -> Any:
    conf = tmp / "nginx.conf"
    user = "user root root;" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""
{user}
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {repo};
        autoindex off;
        location /metadata/ {{ }}
        location /targets/ {{ }}
        location / {{ return 404; }}
    }}
}}
"""
    )
    return subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_gunicorn(
    repo: Path, cert: Path, key: Path, port: int, workers: int, threads: int, app: str
) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env.update(
        OTA_REPO=str(repo),
        OTA_BIND=f"127.0.0.1:{port}",
        OTA_WORKERS=str(workers),
        OTA_THREADS=str(threads),
        OTA_TLS_CERT=str(cert),
        OTA_TLS_KEY=str(key),
        OTA_KEY_PASSPHRASE=PASSPHRASE,
        PYTHONPATH=str(HERE),
    )
    return subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "python:repository.server.gunicorn_conf", app],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


_WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_WRK_BAD = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_ERR = re.compile(r"Socket errors:.*")


def load_wrk(url: str, token: str | None, seconds: float, conns: int, tmp: Path) -> float:
    script = tmp / "headers.lua"  # the token goes in a 0600 file, never on a command line
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if token:
            f.write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conns}", f"-d{max(1, round(seconds))}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    bad = _WRK_BAD.search(out)
    err = _WRK_ERR.search(out)
    if bad or err:
        raise SystemExit(f"failed requests against {url}:\n{out}")
    m = _WRK_RPS.search(out)
    if m is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    return float(m.group(1))


def load_python(url: str, token: str | None, seconds: float, conns: int, tmp: Path) -> float:
    """Fallback: `conns` keep-alive clients in separate processes (bounded by time)."""
    script = HERE / "_loadgen.py"
    env = dict(os.environ)
    if token:
        env["BENCH_TOKEN"] = token
    out = subprocess.run(
        [sys.executable, str(script), url, str(seconds), str(conns)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
        env=env,
    ).stdout
    return float(out.strip().splitlines()[-1])


def prepare(tmp: Path) -> tuple[Path, str]:
    os.environ["OTA_KEY_PASSPHRASE"] = PASSPHRASE
    from repository.create import init_dev
    from repository.devices import add_device
    from repository.layout import RepoPaths

    repo = init_dev(tmp / "repo")
    image = tmp / "fw.bin"
    image.write_bytes(os.urandom(1024 * 1024))
    repo.add_targets([(image, TARGET, {"firmware": {"version": "1.0.0"}})])
    token = add_device(RepoPaths(repo.paths.root), "bench-device", "model-x")
    return repo.paths.root, token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--no-plain-flask", action="store_true")
    args = ap.parse_args()
    load = load_wrk if shutil.which("wrk") else load_python
    with tempfile.TemporaryDirectory(prefix="ota-bench-server-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)  # noqa: S103 - nginx workers may run as another user
        repo, token = prepare(tmp)
        os.chmod(repo, 0o755)  # noqa: S103 - only public metadata/ and targets/ below
        cert, key = make_cert(tmp)
        (target_file,) = (repo / "targets" / "firmware" / "model-x").glob("*.fw-1.0.0.bin")
        paths = {
            "timestamp.json": "/metadata/timestamp.json",
            "1 MiB target": f"/targets/firmware/model-x/{target_file.name}",
        }
        ours = "repository.server:create_app()"
        plain = f"bench_server:plain_flask_app({str(repo)!r})"
        specs: list[tuple[str, Any, str | None]] = [
            ("nginx", lambda p: start_nginx(tmp, repo, cert, key, p, args.workers), None),
            (
                "ota server, device auth on",
                lambda p: start_gunicorn(repo, cert, key, p, args.workers, args.threads, ours),
                token,
            ),
        ]
        if not args.no_plain_flask:
            specs.append(
                (
                    "plain Flask send_from_directory",
                    lambda p: start_gunicorn(repo, cert, key, p, args.workers, args.threads, plain),
                    None,
                )
            )
        running: list[tuple[str, Any, str | None, str]] = []
        try:
            for name, start, auth_token in specs:
                port = free_port()
                running.append((name, start(port), auth_token, f"https://127.0.0.1:{port}"))
            for _name, _, auth_token, base in running:
                headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
                wait_ready(base + paths["timestamp.json"], cert, headers, time.monotonic() + 30)
                for path in paths.values():
                    load(base + path, auth_token, 1, args.connections, tmp)  # warm up
            # Interleaved rounds: this machine is shared, so each ratio compares measurements
            # taken seconds apart, and the median of the rounds is reported.
            results: dict[str, dict[str, list[float]]] = {
                name: {label: [] for label in paths} for name, *_ in running
            }
            for _ in range(args.rounds):
                for label, path in paths.items():
                    for name, _, auth_token, base in running:
                        rps = load(base + path, auth_token, args.seconds, args.connections, tmp)
                        results[name][label].append(rps)
        finally:
            for _, proc, _, _ in running:
                stop(proc)
        print(
            f"load: {load.__name__.removeprefix('load_')}, {args.connections} connections, "
            f"{args.seconds:g}s x {args.rounds} interleaved rounds, {args.workers} worker "
            f"processes for both servers, gunicorn gthread x{args.threads}, TLS on both"
        )
        floor = results["nginx"]
        for label in paths:
            print(f"\n{label}")
            for name in results:
                runs = results[name][label]
                ratios = [r / f for r, f in zip(runs, floor[label], strict=True)]
                print(
                    f"  {name:<33} {statistics.median(runs):9.0f} req/s   "
                    f"ratio {statistics.median(ratios):.3f} (rounds: "
                    + ", ".join(f"{x:.3f}" for x in ratios)
                    + ")"
                )


if __name__ == "__main__":
    main()
