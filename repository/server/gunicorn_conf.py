"""The shipped gunicorn configuration: TLS, optional mutual TLS, workers, timeouts.

    OTA_REPO=/srv/ota OTA_TLS_CERT=/etc/ota/server.pem OTA_TLS_KEY=/etc/ota/server.key \\
        gunicorn -c python:repository.server.gunicorn_conf 'repository.server:create_app()'

Environment (all optional except the certificate):
    OTA_BIND          address:port to listen on (default 127.0.0.1:8443)
    OTA_TLS_CERT      server certificate chain (PEM)
    OTA_TLS_KEY       its private key (PEM, readable only by the server user)
    OTA_DEVICE_CA     CA bundle that issues device certificates: turns on mutual TLS
    OTA_MTLS          "required" (default when OTA_DEVICE_CA is set) or "optional"
                      (devices without a certificate may still use a bearer token)
    OTA_WORKERS       worker processes (default: CPU count)
    OTA_THREADS       threads per worker (default 16; each serves one connection at a time)
    OTA_PLAINTEXT=1   serve plain HTTP (only behind a TLS-terminating proxy on loopback)
    OTA_PIDFILE       write the master's PID here
    OTA_MAX_CONNECTIONS  open connections per worker process (default 1000)

Slow clients (handshake, header, body and send deadlines, connections per client address,
upload threads): OTA_HANDSHAKE_TIMEOUT, OTA_HEADER_TIMEOUT, OTA_BODY_TIMEOUT,
OTA_BODY_MIN_RATE, OTA_SEND_TIMEOUT, OTA_MAX_CONNS_PER_IP, OTA_UPLOAD_THREADS, read by the
worker class `repository.server.worker.SlowClientWorker` (see its docstring and
docs/operator.md, "Connection limits and timeouts"). They are checked here, at start.
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any

from repository.server.slowclients import limits_from_env


def _fail(message: str) -> None:
    print(f"ota-server: {message}", file=sys.stderr)
    raise SystemExit(1)


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        _fail(f"{name} must be a positive integer, not {value!r}")
    return int(value)


bind = [os.environ.get("OTA_BIND", "127.0.0.1:8443")]
http_protocols = "h1"  # device identity under mTLS is read from the HTTP/1.1 TLS socket
# gthread (keep-alive connections: one TLS handshake per device visit) whose event loop does
# the TLS handshake and reads request heads within deadlines, so slow clients hold no thread
worker_class = "repository.server.worker.SlowClientWorker"
workers = _int_env("OTA_WORKERS", os.cpu_count() or 2)
threads = _int_env("OTA_THREADS", 16)
worker_connections = _int_env("OTA_MAX_CONNECTIONS", 1000)
try:
    limits_from_env(os.environ, threads=threads)
except ValueError as _e:
    _fail(str(_e))
timeout = 60  # a worker stuck this long is restarted
graceful_timeout = 30
keepalive = 15
backlog = 1024
preload_app = True  # a bad repository or setting stops the start, once, with one message
max_requests = 0
limit_request_line = 2048
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = None  # the request audit (.ota/server-audit.log) records every request
errorlog = "-"
loglevel = "info"
proc_name = "ota-server"
pidfile = os.environ.get("OTA_PIDFILE") or None
# The worker heartbeat touches a file on every loop turn: on tmpfs it costs nothing, on an
# overlay or network file system it cost ~8% of throughput in bench/bench_server.py.
_SHM = "/dev/shm"  # noqa: S108 - gunicorn's own recommendation; only heartbeat files go there
if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
    worker_tmp_dir = _SHM

if os.environ.get("OTA_PLAINTEXT") == "1":
    certfile = None
    keyfile = None
else:
    certfile = os.environ.get("OTA_TLS_CERT")
    keyfile = os.environ.get("OTA_TLS_KEY")
    if not certfile or not keyfile:
        _fail(
            "set OTA_TLS_CERT and OTA_TLS_KEY (or OTA_PLAINTEXT=1 behind a TLS-terminating proxy)"
        )
    for _path in (certfile, keyfile):
        if not os.path.isfile(str(_path)):
            _fail(f"TLS file not found: {_path}")

_device_ca = os.environ.get("OTA_DEVICE_CA")
if _device_ca:
    if not os.path.isfile(_device_ca):
        _fail(f"device CA not found: {_device_ca}")
    _mode = os.environ.get("OTA_MTLS", "required")
    if _mode not in ("required", "optional"):
        _fail(f"OTA_MTLS must be 'required' or 'optional', not {_mode!r}")
    ca_certs = _device_ca
    cert_reqs = ssl.CERT_REQUIRED if _mode == "required" else ssl.CERT_OPTIONAL


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    """TLS 1.2 or newer only; everything else as gunicorn's default context."""
    context: ssl.SSLContext = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
