"""The server's gunicorn worker: gthread, with every slow client bounded in time and number.

gunicorn's gthread worker runs the TLS handshake and reads the request head in a worker thread
on a blocking socket with no timeout: a few dozen connections that send three bytes (or
nothing) hold every thread. `SlowClientWorker` keeps those threads for requests that are ready
to be answered:

- the TLS handshake, the request head and a small body (at most 64 KiB with a Content-Length)
  are read by the worker's event loop on non-blocking sockets, each within its own deadline;
  a connection that misses one is closed and logged with its peer address;
- a larger or chunked body (uploads) is read by a thread of a separate, smaller pool, and must
  keep progressing: every OTA_BODY_TIMEOUT seconds at least OTA_BODY_MIN_RATE bytes a second
  arrive or the request is cut (408) and logged; so uploads can never hold the threads that
  answer devices, and a slow body holds its thread for a bounded time only;
- each client address may hold a bounded number of connections per worker process (not a
  proxy in gunicorn's `forwarded_allow_ips`, by default the loopback: nginx on the same host);
- a closing connection lingers on the event loop, not in a blocking drain.

Dropped connections are logged one line each, rate-limited (`slowclients.DropLog`).

Environment (`slowclients.limits_from_env`, checked when the configuration loads; see
docs/operator.md):
    OTA_HANDSHAKE_TIMEOUT  seconds for a new connection to finish its TLS handshake (default 5)
    OTA_HEADER_TIMEOUT     seconds for a request head (and a small body) to arrive, counted from
                           its first byte on a kept-alive connection (default 10)
    OTA_BODY_TIMEOUT       window, in seconds, over which an upload body must progress (10)
    OTA_BODY_MIN_RATE      bytes a second an upload body must average over each window (1024)
    OTA_SEND_TIMEOUT       seconds a response write may wait for the client to read (30)
    OTA_MAX_CONNS_PER_IP   open connections per client address and worker (default 64 under
                           TLS; 0 = no cap, the default with OTA_PLAINTEXT=1 behind a proxy)
    OTA_UPLOAD_THREADS     threads per worker that read large or chunked bodies (default
                           threads / 4, at least 1)
"""

from __future__ import annotations

import errno
import ipaddress
import os
import resource
import selectors
import socket
import ssl
import time
from collections import Counter
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker
from werkzeug.exceptions import RequestTimeout

from repository.server.slowclients import BUFFERED_BODY_MAX, DropLog, body_kind, limits_from_env

_LINGER = 2.0  # seconds a closing connection may take to read the peer's last bytes
_RECV = 65536
_ACCEPT_BATCH = 64
_SCAN_EVERY = 0.25  # seconds between two looks for connections past their deadline

_HANDSHAKE, _HEAD, _BODY, _LINGERING = "handshake", "head", "body", "linger"


class SlowBody(RequestTimeout):
    """A request body stopped progressing: the request is answered 408 and its connection
    closed."""


class _ProgressUnreader(SocketUnreader):  # type: ignore[misc]
    """Reads a body in a thread: each window must bring `min_bytes`, else `SlowBody`."""

    def __init__(self, sock: Any, conn: _Conn) -> None:
        super().__init__(sock)
        self._conn = conn
        self._window_end = 0.0
        self._window_bytes = 0

    def start(self) -> None:
        self._window_end = time.monotonic() + self._conn.limits.body_timeout
        self._window_bytes = 0

    def chunk(self, size_hint: int | None = None) -> bytes:
        limits = self._conn.limits
        size = self.mxchunk
        if size_hint and size_hint > size:
            size = min(size_hint, self.max_body_chunk)
        need = limits.body_min_rate * limits.body_timeout
        while True:
            now = time.monotonic()
            if now >= self._window_end:
                if self._window_bytes < need:
                    self._conn.cut = True
                    self._conn.worker.drops.drop(
                        self._conn.peer,
                        "request body too slow",
                        f" (under {limits.body_min_rate} bytes/s for {limits.body_timeout:g} s)",
                    )
                    raise SlowBody()
                self._window_end, self._window_bytes = now + limits.body_timeout, 0
            self.sock.settimeout(self._window_end - now)
            try:
                data: bytes = self.sock.recv(size)
            except TimeoutError:
                continue
            finally:
                self.sock.settimeout(limits.send_timeout)
            self._window_bytes += len(data)
            return data


class _Conn(TConn):  # type: ignore[misc]
    """A client connection and where the event loop is with it."""

    def __init__(self, worker: SlowClientWorker, sock: socket.socket, client: Any, server: Any):
        super().__init__(worker.cfg, sock, client, server)
        self.worker = worker
        self.limits = worker.limits
        self.peer = client[0] if isinstance(client, tuple) else str(client or "local")
        self.phase = _HEAD
        self.deadline = 0.0
        self.events = selectors.EVENT_READ
        self.buf = bytearray()
        self.need = 0  # bytes of head and buffered body, once the head is complete
        self.pool: futures.ThreadPoolExecutor | None = None  # set: ready for that pool
        self.cut = False
        self.released = False

    def init(self) -> None:
        """In the thread, after gunicorn made the socket blocking: bound it in time."""
        self.sock.settimeout(self.limits.send_timeout)
        self.initialized = True

    def close(self, graceful: bool = False) -> None:
        if self.released:
            return
        self.released = True
        self.worker.per_ip[self.peer] -= 1
        if self.worker.per_ip[self.peer] <= 0:
            del self.worker.per_ip[self.peer]
        if graceful and not self.cut and self.worker.alive:
            self.worker.linger(self)
        else:
            _hard_close(self.sock)


def _hard_close(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass


class SlowClientWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with deadlines on handshake, head and body, and a cap per client address."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits_from_env(os.environ, threads=self.cfg.threads)
        self.per_ip: Counter[str] = Counter()
        self.waiting: dict[int, _Conn] = {}
        self.upload_pool: futures.ThreadPoolExecutor | None = None
        self.drops = DropLog(self.log)
        self._accept_paused_until = 0.0
        self._next_scan = 0.0
        self._ssl_checked = 0.0
        self._ssl: ssl.SSLContext | None = None
        self._ssl_stamp: tuple[float, ...] = ()

    def init_process(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.cfg.worker_connections + 256
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        self.upload_pool = futures.ThreadPoolExecutor(max_workers=self.limits.upload_threads)
        super().init_process()

    # -- accepting -------------------------------------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and time.monotonic() >= self._accept_paused_until)

    def _trusted_proxy(self, peer: str) -> bool:
        """A proxy in gunicorn's forwarded_allow_ips (default: the loopback) is not capped."""
        allowed = self.cfg.forwarded_allow_ips
        if "*" in allowed:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return peer == "local"
        for entry in allowed:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def _context(self) -> ssl.SSLContext:
        """One TLS context per worker, built again when a certificate file changes (looked
        at once a second)."""
        now = time.monotonic()
        if self._ssl is not None and now < self._ssl_checked + 1.0:
            return self._ssl
        self._ssl_checked = now
        stamp = tuple(
            os.stat(p).st_mtime if p and os.path.exists(p) else 0.0
            for p in (self.cfg.certfile, self.cfg.keyfile, self.cfg.ca_certs)
        )
        if self._ssl is None or stamp != self._ssl_stamp:
            self._ssl, self._ssl_stamp = gsock.ssl_context(self.cfg), stamp
        return self._ssl

    def accept(self, listener: Any) -> None:
        """Accept what waits in the backlog (up to `_ACCEPT_BATCH`), not one connection a
        turn of the loop: under a flood, a device's connection is not left queued behind it."""
        for _ in range(_ACCEPT_BATCH):
            if self.nr_conns >= self.worker_connections or not self._accept_one(listener):
                return

    def _accept_one(self, listener: Any) -> bool:
        """Accept one connection; False when there is none (or no file descriptor) now."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.drops.drop("(not accepted)", "out of file descriptors", f" ({e.strerror})")
                self._accept_paused_until = time.monotonic() + 0.5
                self.set_accept_enabled(False)
            elif e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return False
        peer = client_addr[0] if isinstance(client_addr, tuple) else "local"
        cap = self.limits.max_conns_per_ip
        if cap and self.per_ip[peer] >= cap and not self._trusted_proxy(peer):
            self.drops.drop(peer, "too many connections from this address", f" (cap {cap})")
            _hard_close(client_sock)
            return True
        self.nr_conns += 1
        self.per_ip[peer] += 1
        conn = _Conn(self, client_sock, client_addr, listener.getsockname())
        try:
            if self.cfg.is_ssl:
                conn.sock = self._context().wrap_socket(
                    conn.sock,
                    server_side=True,
                    do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                )
                self._wait(conn, _HANDSHAKE, self.limits.handshake_timeout)
            else:
                self._wait(conn, _HEAD, self.limits.header_timeout)
        except (OSError, ssl.SSLError) as e:
            self._drop(conn, "could not start TLS", f" ({e})")
        return True

    # -- the event loop's part of a connection ---------------------------------------------

    def _wait(self, conn: _Conn, phase: str, timeout: float) -> None:
        conn.phase, conn.deadline = phase, time.monotonic() + timeout
        conn.sock.setblocking(False)
        fd = conn.sock.fileno()
        if fd not in self.waiting:
            self.waiting[fd] = conn
            conn.events = selectors.EVENT_READ
            self.poller.register(conn.sock, conn.events, partial(self._on_event, conn))
        self._on_event(conn, conn.sock)

    def _unwait(self, conn: _Conn) -> None:
        try:
            fd = conn.sock.fileno()
        except OSError:
            fd = -1
        if self.waiting.pop(fd, None) is not None:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self.poller.modify(conn.sock, events, partial(self._on_event, conn))

    def _drop(self, conn: _Conn, kind: str, detail: str = "", *, log: bool = True) -> None:
        self._unwait(conn)
        if log:
            self.drops.drop(conn.peer, kind, detail)
        conn.cut = True
        self.nr_conns -= 1
        conn.close()

    def _on_event(self, conn: _Conn, _fileobj: Any) -> None:
        try:
            if conn.phase == _LINGERING:
                self._on_linger(conn)
                return
            if conn.phase == _HANDSHAKE:
                try:
                    conn.sock.do_handshake()
                except ssl.SSLWantReadError:
                    self._want(conn, selectors.EVENT_READ)
                    return
                except ssl.SSLWantWriteError:
                    self._want(conn, selectors.EVENT_WRITE)
                    return
                self._want(conn, selectors.EVENT_READ)
                conn.phase, conn.deadline = _HEAD, time.monotonic() + self.limits.header_timeout
            self._read_head(conn)
        except (ssl.SSLError, OSError) as e:
            what = "TLS handshake failed" if conn.phase == _HANDSHAKE else "read failed"
            reason = getattr(e, "reason", None) or e.strerror or type(e).__name__
            self._drop(conn, what, f" ({reason})", log=conn.phase == _HANDSHAKE)

    def _read_head(self, conn: _Conn) -> None:
        limit = self.cfg.limit_request_line + self.cfg.limit_request_field_size * (
            self.cfg.limit_request_fields + 1
        )
        while len(conn.buf) <= limit + BUFFERED_BODY_MAX:
            try:
                data = conn.sock.recv(_RECV)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            if not data:  # the client closed: nothing to answer
                self._drop(conn, "closed", log=False)
                return
            conn.buf += data
        if conn.phase == _HEAD:
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.buf) > limit:  # gunicorn's parser answers it (400/431)
                    self._ready(conn, self.tpool)
                return
            length = body_kind(bytes(conn.buf[:end]))
            if length is None or length > BUFFERED_BODY_MAX:
                self._ready(conn, self.upload_pool)
                return
            conn.phase, conn.need = _BODY, end + 4 + length
        if conn.phase == _BODY and len(conn.buf) >= conn.need:
            self._ready(conn, self.tpool)

    def _ready(self, conn: _Conn, pool: futures.ThreadPoolExecutor | None) -> None:
        self._unwait(conn)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = _ProgressUnreader(conn.sock, conn)
        conn.parser.unreader.unread(bytes(conn.buf))
        conn.buf.clear()
        conn.parser.unreader.start()
        conn.initialized = conn.data_ready = True  # gunicorn must not wait for the socket
        conn.pool = pool or self.tpool
        self.enqueue_req(conn)

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn, _Conn):
            super().enqueue_req(conn)
            return
        pool, conn.pool = conn.pool, None
        if pool is None:  # kept alive or pipelined: read its next head on the event loop
            if conn.parser is not None:
                conn.buf += conn.parser.unreader.take_buffered()
            self._wait(conn, _HEAD, self.limits.header_timeout)
            return
        fs = pool.submit(self.handle, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def linger(self, conn: _Conn) -> None:
        """Half-close, then read what the peer still sends until it closes or `_LINGER`."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            _hard_close(conn.sock)
            return
        conn.buf.clear()
        conn.phase, conn.deadline = _LINGERING, time.monotonic() + _LINGER
        conn.sock.setblocking(False)
        self.waiting[conn.sock.fileno()] = conn
        conn.events = selectors.EVENT_READ
        self.poller.register(conn.sock, conn.events, partial(self._on_event, conn))

    def _on_linger(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        if not data:
            self._unwait(conn)
            _hard_close(conn.sock)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if now < self._next_scan:  # the loop turns often under load: scan a few times a second
            return
        self._next_scan = now + _SCAN_EVERY
        for conn in [c for c in self.waiting.values() if c.deadline <= now]:
            if conn.phase == _LINGERING:
                self._unwait(conn)
                _hard_close(conn.sock)
            elif conn.phase == _HANDSHAKE:
                detail = f" (in {self.limits.handshake_timeout:g} s)"
                self._drop(conn, "TLS handshake not done", detail)
            else:
                what = "request head" if conn.phase == _HEAD else "request body"
                self._drop(conn, f"{what} not received", f" (in {self.limits.header_timeout:g} s)")
        self.drops.flush()

    # -- the thread's part -----------------------------------------------------------------

    def handle_request(self, req: Any, conn: Any) -> bool:
        keep: bool = super().handle_request(req, conn)
        return keep and not getattr(conn, "cut", False)

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        if getattr(conn, "cut", False):
            return False
        try:
            return bool(super()._keepalive_after(conn, keepalive))
        except SlowBody:
            return False

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, SlowBody):  # logged when cut; the connection closes
            return
        super().handle_error(req, client, addr, exc)

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.upload_pool is not None:
                self.upload_pool.shutdown(wait=False)
