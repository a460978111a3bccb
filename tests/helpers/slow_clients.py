"""Slow-client attackers against a server on loopback, for tests and bench/.

    with SlowClients(host, port, ca, kinds={"pre-tls": 200, "idle": 200}) as attack:
        ...  # normal requests while the connections are held

One background thread drives every connection on non-blocking sockets. Each kind keeps its
number of connections open until the context ends (a connection the server closes is opened
again); the loop stops by itself at `max_seconds`. Connections come from `sources` loopback
addresses (127.0.1.1, 127.0.1.2, ...) in turn, so a per-address cap is not what stops them.

Kinds: `pre-tls` sends the 3-byte TLS record header `16 03 01` and nothing more; `idle` sends
nothing; `slow-headers` finishes the TLS handshake, then sends a request head one byte every
`drip` seconds; `slow-body` finishes the handshake, sends a complete head (`body_head`) and
then its body one byte every `drip` seconds.
"""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

KINDS = ("pre-tls", "idle", "slow-headers", "slow-body")
_SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 4000


@dataclass
class _Conn:
    kind: str
    sock: socket.socket
    state: str = "connecting"  # connecting, handshake, drip, hold
    sent: int = 0
    payload: bytes = b""
    fd: int = -1
    opened: float = field(default_factory=time.monotonic)


class SlowClients:
    """Hold slow connections of each kind in `kinds` (kind -> count) to `host`:`port`."""

    def __init__(
        self,
        host: str,
        port: int,
        ca_cert: Path,
        *,
        kinds: dict[str, int],
        body_head: bytes = b"",
        drip: float = 2.0,
        sources: int = 32,
        max_seconds: float = 120.0,
    ) -> None:
        self.host, self.port = host, port
        self.kinds = dict(kinds)
        self.body_head = body_head
        self.drip = drip
        self.sources = [f"127.0.1.{i}" for i in range(1, sources + 1)]
        self.max_seconds = max_seconds
        self.ctx = ssl.create_default_context(cafile=str(ca_cert))
        self.ctx.check_hostname = False
        self.opened: Counter[str] = Counter()  # connections opened, per kind
        self.closed_by_server: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._conns: dict[int, _Conn] = {}
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._next_source = 0

    # -- public ----------------------------------------------------------------------------

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def after(self, ready: Callable[[], object]) -> SlowClients:
        """Call `ready` (for example another attack's `wait_held`) before entering."""
        ready()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def held(self) -> Counter[str]:
        """Connections of each kind open now that got as far as their kind goes."""
        out: Counter[str] = Counter()
        for c in list(self._conns.values()):
            if c.state in ("drip", "hold"):
                out[c.kind] += 1
        return out

    def wait_held(self, share: float = 0.9, timeout: float = 30.0) -> Counter[str]:
        """Wait (bounded) until `share` of every kind's connections are held; return them."""
        deadline = time.monotonic() + timeout
        held = self.held()
        while time.monotonic() < deadline:
            held = self.held()
            if all(held[k] >= share * n for k, n in self.kinds.items()):
                break
            time.sleep(0.1)
        return held

    # -- the loop --------------------------------------------------------------------------

    def _open(self, kind: str) -> None:
        source = self.sources[self._next_source % len(self.sources)]
        self._next_source += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind((source, 0))
            err = sock.connect_ex((self.host, self.port))
        except OSError as e:
            sock.close()
            self.errors[f"open: {e.strerror}"] += 1
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.errors[f"connect: {errno.errorcode.get(err, err)}"] += 1
            return
        conn = _Conn(kind, sock, fd=sock.fileno())
        self._conns[conn.fd] = conn
        self._sel.register(sock, selectors.EVENT_WRITE, conn)
        self.opened[kind] += 1

    def _close(self, conn: _Conn, *, by_server: bool) -> None:
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._conns.pop(conn.fd, None)
        if by_server:
            self.closed_by_server[conn.kind] += 1
        conn.sock.close()

    def _connected(self, conn: _Conn) -> None:
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._close(conn, by_server=True)
            return
        if conn.kind == "idle":
            conn.state = "hold"
        elif conn.kind == "pre-tls":
            conn.sock.send(b"\x16\x03\x01")
            conn.state = "hold"
        else:
            raw = conn.sock
            self._sel.unregister(raw)
            conn.sock = self.ctx.wrap_socket(
                raw, server_hostname="127.0.0.1", do_handshake_on_connect=False
            )
            conn.fd = conn.sock.fileno()
            self._conns[conn.fd] = conn
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            conn.state = "handshake"
            self._handshake(conn)
            return
        self._sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _handshake(self, conn: _Conn) -> None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
        conn.state = "drip"
        if conn.kind == "slow-body":
            conn.sock.send(self.body_head)
            conn.payload = b"4000\r\n" + b"a" * 4000
        else:
            conn.payload = _SLOW_HEAD

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except OSError:
            data = b""
        # the server closed it, or answered it (408, 400): either way it no longer holds it
        self._close(conn, by_server=True)
        del data

    def _drip(self, now: float) -> None:
        for conn in list(self._conns.values()):
            if conn.state != "drip" or conn.sent >= len(conn.payload):
                continue
            try:
                conn.sent += conn.sock.send(conn.payload[conn.sent : conn.sent + 1])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
            except OSError:
                self._close(conn, by_server=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        next_drip = time.monotonic() + self.drip
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                counts = Counter(c.kind for c in self._conns.values())
                for kind, n in self.kinds.items():
                    for _ in range(min(n - counts[kind], 50)):  # at most 50 new a turn
                        self._open(kind)
                for key, events in self._sel.select(timeout=0.05):
                    conn = key.data
                    try:
                        if conn.state == "connecting":
                            self._connected(conn)
                        elif conn.state == "handshake":
                            self._handshake(conn)
                        elif events & selectors.EVENT_READ:
                            self._readable(conn)
                    except (OSError, ssl.SSLError, ValueError) as e:
                        self.errors[type(e).__name__] += 1
                        self._close(conn, by_server=True)
                now = time.monotonic()
                if now >= next_drip:
                    self._drip(now)
                    next_drip = now + self.drip
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, by_server=False)
            self._sel.close()
