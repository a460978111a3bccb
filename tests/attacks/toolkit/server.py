"""A malicious HTTPS server on 127.0.0.1 (port 0) that the real `ota-client` process talks to.

It serves whatever repository it is pointed at (`server.repo`: a `RepositorySimulator`, a fork
of it as an attacker's mirror, or an `UpstreamMirror` that makes it a man in the middle in front
of the real update server), and a list of `Rule`s rewrites answers on the way out (GET, and the
device's report POSTs): replayed or swapped bytes, error statuses, redirects, truncated bodies,
wrong content types, header floods, gzip bombs, lying ranges, extra or endless data, and a
trickle of one byte just before each socket timeout. Every stream is bounded (`max_seconds`,
`max_bytes`) and stops by itself, and `stop()` ends them all. The TLS certificate chains to a
test CA that the device pins, so this is the strongest network attacker short of a stolen CA:
it controls every byte the device receives.
"""

from __future__ import annotations

import fnmatch
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-$")
CHUNK = 64 * 1024


class Source(Protocol):
    files: dict[str, bytes]


class Action(Protocol):
    def __call__(self, h: _Handler, data: bytes | None) -> None: ...


@dataclass
class Rule:
    """Rewrite answers for paths matching `pattern` (fnmatch on the decoded path, no leading
    slash, e.g. `metadata/timestamp.json` or `targets/firmware/*`); `times` limits how often
    (None: always). `hits` counts how often it fired."""

    pattern: str
    action: Action
    times: int | None = None
    hits: int = 0

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.pattern) and (
            self.times is None or self.hits < self.times
        )


# -- actions ---------------------------------------------------------------------------------------


def serve_bytes(data: bytes, content_type: str = "application/octet-stream") -> Action:
    """Answer 200 with `data` instead of the real file (replay, swap, mix-and-match)."""

    def act(h: _Handler, _: bytes | None) -> None:
        h.send_body(200, data, content_type)

    return act


def status(code: int, body: bytes = b"", content_type: str = "text/plain") -> Action:
    def act(h: _Handler, _: bytes | None) -> None:
        h.send_body(code, body or f"{code}\n".encode(), content_type)

    return act


def redirect(location: str, code: int = 302) -> Action:
    """Send the device elsewhere (the attacker's host, or a path outside the repository)."""

    def act(h: _Handler, _: bytes | None) -> None:
        h.send_head(code, 0, extra={"Location": location})

    return act


def gzip_bomb(decoded_bytes: int = 64 * 1024 * 1024) -> Action:
    """A small gzip body that inflates to `decoded_bytes` of zeros, with Content-Encoding: gzip
    although the device asked for identity."""
    import functools
    import gzip

    @functools.cache
    def body() -> bytes:
        return gzip.compress(b"\0" * decoded_bytes, compresslevel=9)

    def act(h: _Handler, _: bytes | None) -> None:
        h.send_head(200, len(body()), extra={"Content-Encoding": "gzip"})
        h.write(body())

    return act


def header_flood(count: int = 5000) -> Action:
    """An answer with thousands of headers before any body."""

    def act(h: _Handler, _: bytes | None) -> None:
        h.send_response(200)
        for i in range(count):
            h.send_header(f"X-Flood-{i}", "x" * 64)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return act


def lying_range(shift: int = 4096) -> Action:
    """Answer a resume request (`Range: bytes=N-`) with 206 and a Content-Range that starts
    elsewhere (and the bytes from there), as a cache that mixes up ranges would."""

    def act(h: _Handler, data: bytes | None) -> None:
        match = _RANGE.match(h.headers.get("Range", ""))
        if data is None or not match:
            h.serve_ranged(data or b"")
            return
        start = max(0, int(match.group(1)) - shift)
        part = data[start:]
        h.send_head(
            206, len(part), extra={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        )
        h.write(part)

    return act


def wrong_content_type(body: bytes = b"<html><body>maintenance</body></html>\n") -> Action:
    """200 with an HTML page (a captive portal, a broken CDN, a misconfigured proxy)."""
    return serve_bytes(body, "text/html; charset=utf-8")


def truncate(keep: int | float) -> Action:
    """Promise the full length, send only `keep` bytes (or that fraction), then hang up."""

    def act(h: _Handler, data: bytes | None) -> None:
        if data is None:
            h.send_body(404, b"404\n")
            return
        n = int(len(data) * keep) if isinstance(keep, float) else keep
        h.send_head(200, len(data))
        h.write(data[:n])
        h.close_connection = True

    return act


def extra_bytes(n: int) -> Action:
    """The real bytes followed by `n` more, and a Content-Length that says so."""

    def act(h: _Handler, data: bytes | None) -> None:
        body = (data or b"") + b"\xee" * n
        h.send_body(200, body)

    return act


def endless(
    *, max_seconds: float = 20.0, max_bytes: int = 64 * 1024 * 1024, prefix_real: bool = True
) -> Action:
    """Stream without Content-Length and never finish (until a bound or the client leaves)."""

    def act(h: _Handler, data: bytes | None) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        sent = 0
        deadline = time.monotonic() + max_seconds
        if prefix_real and data:
            if not h.write(data):
                return
            sent += len(data)
        filler = b"\x00" * CHUNK
        while sent < max_bytes and time.monotonic() < deadline and not h.stopping():
            if not h.write(filler):
                return
            sent += len(filler)
        h.note(f"endless stream stopped by its own bound after {sent} bytes")

    return act


def trickle(*, interval: float, max_seconds: float = 30.0) -> Action:
    """Promise the full file, then send it one byte every `interval` seconds (set just below
    the client's read timeout, so no single read ever times out)."""

    def act(h: _Handler, data: bytes | None) -> None:
        if data is None:
            h.send_body(404, b"404\n")
            return
        h.send_head(200, len(data))
        h.close_connection = True
        deadline = time.monotonic() + max_seconds
        for byte in data:
            if time.monotonic() >= deadline or h.stopping():
                h.note("trickle stopped by its own bound")
                return
            if not h.write(bytes([byte])):
                return
            h.server.stop_event.wait(interval)

    return act


def trickle_answer(
    answer: bytes = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
    *,
    interval: float,
    max_seconds: float = 30.0,
) -> Action:
    """Send a whole raw answer, status line first, one byte every `interval` seconds: the
    client cannot even learn the status before the server lets it."""

    def act(h: _Handler, _: bytes | None) -> None:
        h.close_connection = True
        deadline = time.monotonic() + max_seconds
        for byte in answer:
            if time.monotonic() >= deadline or h.stopping():
                h.note("trickle stopped by its own bound")
                return
            if not h.write(bytes([byte])):
                return
            h.server.stop_event.wait(interval)

    return act


def replace_bytes(offset: int, new: bytes) -> Action:
    """The real file with `new` written over it at `offset` (same length: a bit-flipper)."""

    def act(h: _Handler, data: bytes | None) -> None:
        if data is None:
            h.send_body(404, b"404\n")
            return
        body = bytearray(data)
        body[offset : offset + len(new)] = new
        h.serve_ranged(bytes(body))

    return act


# -- a proxy in front of the real server ---------------------------------------------------


class UpstreamMirror:
    """`files` for an `AttackServer` that is a man in the middle: every path is fetched from
    the real update server (with the device's token, which the proxy sees and replays), so
    rules rewrite genuine answers. Bytes seen once are kept in `seen` for later replay."""

    def __init__(self, url: str, ca: Path, token: str | None):
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(ca)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.seen: dict[str, list[bytes]] = {}
        self.files = self  # the AttackServer reads `repo.files.get(path)`

    def get(self, path: str) -> bytes | None:
        from urllib.parse import quote

        response = self.session.get(f"{self.url}/{quote(path)}", timeout=30)
        if response.status_code != 200:
            return None
        data = response.content
        history = self.seen.setdefault(path, [])
        if not history or history[-1] != data:
            history.append(data)
        return data


# -- the server ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AttackServer
    timeout = 20  # an idle keep-alive connection does not hold a thread for long

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def stopping(self) -> bool:
        return self.server.stop_event.is_set()

    def note(self, text: str) -> None:
        self.server.notes.append(text)

    def write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            return False
        return True

    def send_head(
        self,
        code: int,
        length: int,
        content_type: str = "application/octet-stream",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def send_body(
        self, code: int, body: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        self.send_head(code, len(body), content_type)
        if self.command != "HEAD":
            self.write(body)

    def serve_ranged(self, data: bytes) -> None:
        """200, or 206 for `Range: bytes=N-` (resumable downloads)."""
        match = _RANGE.match(self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            if start >= len(data):
                self.send_head(416, 0, extra={"Content-Range": f"bytes */{len(data)}"})
                return
            part = data[start:]
            self.send_head(
                206,
                len(part),
                extra={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            )
            self.write(part)
            return
        self.send_body(200, data)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path).lstrip("/")
        self.server.record(self.command, path, self.headers.get("Range"))
        data = self.server.repo.files.get(path)
        for rule in self.server.rules:
            if rule.matches(path):
                rule.hits += 1
                rule.action(self, data)
                return
        if data is None:
            self.send_body(404, b"404\n", "text/plain")
            return
        content_type = (
            "application/json" if path.endswith(".json") else ("application/octet-stream")
        )
        if content_type == "application/json":
            self.send_body(200, data, content_type)
        else:
            self.serve_ranged(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1024 * 1024)) if length else b""
        path = urlsplit(self.path).path
        self.server.record("POST", path.lstrip("/"), None)
        for rule in self.server.rules:
            if rule.matches(path.lstrip("/")):
                rule.hits += 1
                rule.action(self, b'{"status": "recorded"}' + b" " * 256)
                return
        if path == "/api/v1/reports":
            try:
                self.server.reports.append(json.loads(body))
            except ValueError:
                self.send_body(400, b"400\n")
                return
            self.send_body(201, b"{}", "application/json")
            return
        self.send_body(404, b"404\n")


class AttackServer(ThreadingHTTPServer):
    """Serve `repo.files` over TLS on 127.0.0.1 with `rules` applied.

    Args:
        repo: What is served (anything with a `files` dict: URL path -> bytes).
        cert, key: The server certificate (for 127.0.0.1) and its key.
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, repo: Source, cert: Path, key: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repo = repo
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, str | None]] = []
        self.reports: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(cert), str(key))
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def record(self, method: str, path: str, range_: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_))

    def paths_requested(self) -> list[str]:
        with self._lock:
            return [p for m, p, _ in self.requests if m == "GET"]

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens in the worker thread, never in the accept loop.
        request.settimeout(20)
        try:
            tls = self._ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self._workers.append(thread)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up on a hostile stream is the expected outcome

    # -- attack control -------------------------------------------------------------------------

    def attack(self, pattern: str, action: Action, *, times: int | None = None) -> Rule:
        rule = Rule(pattern, action, times)
        self.rules.append(rule)
        return rule

    def calm(self) -> None:
        """Stop attacking: serve the repository as it is."""
        self.rules.clear()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> AttackServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for worker in self._workers:
            worker.join(timeout=5)


__all__ = [
    "AttackServer",
    "Rule",
    "UpstreamMirror",
    "endless",
    "extra_bytes",
    "gzip_bomb",
    "header_flood",
    "lying_range",
    "redirect",
    "replace_bytes",
    "serve_bytes",
    "status",
    "trickle",
    "trickle_answer",
    "truncate",
    "wrong_content_type",
]
