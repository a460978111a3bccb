"""A static HTTPS server for tests: serves a folder the way the real server must.

Run as a subprocess (`TlsStaticServer` does that) so the client talks to a real socket over TLS:
GET/HEAD of files below the root (404 for anything missing, for folders and for traversal: TUF
clients rely on 404 for the next root), single `Range: bytes=N-[M]` requests (206), an optional
bearer token and client certificate requirement, and `POST /api/v1/reports` recorded to
`<state>/reports.jsonl`. Every request is logged to `<state>/requests.jsonl` with the body bytes
sent. Faults for attack tests are read from `<state>/faults.json` on every request:

    {"extra_bytes": {"<path substring>": N},   # send N more bytes than the file has
     "cut_after": {"<path substring>": N},     # stop after N body bytes, close the connection
     "throttle": {"<path substring>": B},      # at most B bytes per second
     "ignore_range": ["<path substring>"],     # answer Range requests with the whole file
     "reports_status": 503}                    # answer reports with this status

Swap for gunicorn when the real server exists: the client only sees HTTPS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _faults(self) -> dict[str, Any]:
        try:
            value = json.loads((self.server.state / "faults.json").read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _fault_for(self, faults: dict[str, Any], kind: str, path: str) -> int | None:
        for fragment, value in faults.get(kind, {}).items():
            if fragment in path:
                return int(value)
        return None

    def _record(self, status: int, sent: int) -> None:
        line = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "status": status,
                "bytes": sent,
                "range": self.headers.get("Range"),
                "auth": bool(self.headers.get("Authorization")),
            }
        )
        with self.server.log_lock, open(self.server.state / "requests.jsonl", "a") as f:
            f.write(line + "\n")

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._empty(401)
        return False

    def _empty(self, status: int) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._record(status, len(body) if self.command != "HEAD" else 0)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self._authorized():
            return
        if urlsplit(self.path).path != "/api/v1/reports":
            self._empty(404)
            return
        status = self._faults().get("reports_status", 201)
        if 200 <= status < 300:
            try:
                report = json.loads(body)
            except ValueError:
                self._empty(400)
                return
            with self.server.log_lock, open(self.server.state / "reports.jsonl", "a") as f:
                f.write(
                    json.dumps({"report": report, "auth": self.headers.get("Authorization")}) + "\n"
                )
        self._empty(status)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._authorized():
            return
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.server.root / rel).resolve()
        if not rel or not path.is_relative_to(self.server.root) or not path.is_file():
            self._empty(404)
            return
        data_len = path.stat().st_size
        faults = self._faults()
        extra = self._fault_for(faults, "extra_bytes", rel) or 0
        total = data_len + extra
        start, end = 0, total - 1
        status = 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and any(f in rel for f in faults.get("ignore_range", [])):
            match = None  # a server (or proxy) that does not do ranges
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else total - 1
            if start >= total or end < start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(416, 0)
                return
            end = min(end, total - 1)
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        if self.command == "HEAD":
            self._record(status, 0)
            return
        cut = self._fault_for(faults, "cut_after", rel)
        rate = self._fault_for(faults, "throttle", rel)
        sent = 0
        began = time.monotonic()
        with open(path, "rb") as f:
            f.seek(start)
            pos = start
            while pos <= end:
                n = min(CHUNK if not rate else max(1024, rate // 20), end - pos + 1)
                if cut is not None:
                    n = min(n, cut - sent)
                    if n <= 0:
                        break
                chunk = f.read(n) if pos < data_len else b""
                if len(chunk) < n:
                    chunk += b"\xee" * (n - len(chunk))  # the extra bytes
                try:
                    self.wfile.write(chunk)
                except OSError:
                    break
                sent += n
                pos += n
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        self._record(status, sent)
        if pos <= end:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    state: Path
    token: str | None
    log_lock: threading.Lock


def serve(args: argparse.Namespace) -> None:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.root = Path(args.root).resolve()
    httpd.state = Path(args.state)
    httpd.token = os.environ.get("TEST_SERVER_TOKEN") or None
    httpd.log_lock = threading.Lock()
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.client_ca)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(f"PORT {httpd.server_address[1]}", flush=True)
    httpd.serve_forever(poll_interval=0.1)


class TlsStaticServer:
    """Start the server as a subprocess; use as a context manager.

    Args:
        root: The folder served (for a repository: the folder holding metadata/ and targets/).
        state: A folder for the request log, reports and faults.
        cert, key: The server's certificate and key (None: plain HTTP, as the TUF
            conformance suite serves).
        client_ca: Require client certificates issued by this CA.
        token: Require `Authorization: Bearer <token>` (passed by environment, never argv).
    """

    def __init__(
        self,
        root: Path,
        state: Path,
        cert: Path | None,
        key: Path | None,
        *,
        client_ca: Path | None = None,
        token: str | None = None,
    ):
        self.root, self.state, self.cert, self.key = root, state, cert, key
        self.client_ca, self.token = client_ca, token
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> TlsStaticServer:
        self.state.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--root",
            str(self.root),
            "--state",
            str(self.state),
        ]
        if self.cert and self.key:
            argv += ["--cert", str(self.cert), "--key", str(self.key)]
        if self.client_ca:
            argv += ["--client-ca", str(self.client_ca)]
        env = dict(os.environ)
        env.pop("TEST_SERVER_TOKEN", None)
        if self.token:
            env["TEST_SERVER_TOKEN"] = self.token
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"test server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> TlsStaticServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the server saw ---------------------------------------------------------------

    def requests(self) -> list[dict[str, Any]]:
        try:
            lines = (self.state / "requests.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines]

    def reset_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state / "requests.jsonl").unlink()

    def reports(self) -> list[dict[str, Any]]:
        try:
            lines = (self.state / "reports.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line)["report"] for line in lines]

    def set_faults(self, faults: dict[str, Any]) -> None:
        tmp = self.state / ".faults.tmp"
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self.state / "faults.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--client-ca")
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
