"""HTTP for the device: auth header, client certificate, pinned CA, time bounds, Range resume.

`DeviceFetcher` moves bytes and never judges them: python-tuf verifies metadata, and firmware
bytes are checked with `TargetFile.verify_length_and_hashes`. It only bounds how long a transfer
may take and how slowly it may trickle, so a hostile or broken server cannot hold a device
forever (the slow-retrieval attack).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from client.errors import Interrupted

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)\Z")


@dataclass(frozen=True)
class FetchLimits:
    """Time bounds for one transfer.

    Attributes:
        connect_timeout: Seconds to establish a connection.
        read_timeout: Seconds without any byte before giving up.
        max_seconds: Upper bound for a whole transfer.
        min_rate: Bytes per second a transfer must average once the grace period is over.
        grace_seconds: Time before `min_rate` applies (slow start, TLS handshake).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_seconds: float = 3600.0
    min_rate: int = 1024
    grace_seconds: float = 30.0


class DeviceFetcher(FetcherInterface):
    """A `FetcherInterface` over a `requests.Session` configured for one device.

    Args:
        ca_bundle: CA certificates the server must chain to (pinned); None uses the system store.
        token: Bearer token sent as `Authorization` on every request.
        client_cert: (certificate, key) files for mutual TLS.
        limits: Time bounds.
        stop: When set, transfers stop between chunks with `Interrupted`.
    """

    def __init__(
        self,
        *,
        ca_bundle: Path | None = None,
        token: str | None = None,
        client_cert: tuple[Path, Path] | None = None,
        limits: FetchLimits | None = None,
        stop: threading.Event | None = None,
        user_agent: str = "ota-client",
    ):
        self.limits = limits or FetchLimits()
        self.stop = stop or threading.Event()
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy, netrc or CA bundle from the environment
        self.session.verify = str(ca_bundle) if ca_bundle else True
        if client_cert is not None:
            self.session.cert = (str(client_cert[0]), str(client_cert[1]))
        self.session.headers["User-Agent"] = user_agent
        self.session.headers["Accept-Encoding"] = "identity"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.requests_made = 0

    def close(self) -> None:
        self.session.close()

    def _get(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        self.requests_made += 1
        try:
            response = self.session.get(
                url,
                headers=headers,
                stream=True,
                timeout=(self.limits.connect_timeout, self.limits.read_timeout),
                allow_redirects=False,
            )
        except requests.RequestException as e:
            raise exceptions.DownloadError(f"cannot fetch {url}: {_reason(e)}") from e
        return response

    def _stream(self, response: requests.Response, url: str) -> Iterator[bytes]:
        watchdog = _Watchdog(response, self.limits, self.stop)
        try:
            for chunk in response.iter_content(CHUNK):
                watchdog.received += len(chunk)
                watchdog.check(url)
                yield chunk
            watchdog.check(url)  # a cut connection may look like a clean end
        except requests.RequestException as e:
            watchdog.check(url)
            raise exceptions.DownloadError(f"{_reason(e)} ({url})") from e
        except (OSError, ValueError, AttributeError) as e:
            watchdog.check(url)  # the watchdog shut the socket under a blocked read
            raise exceptions.DownloadError(f"transfer of {url} failed: {e}") from e
        finally:
            watchdog.stop()
            response.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        """Fetch `url` for python-tuf (metadata and conformance-suite targets).

        Raises:
            exceptions.DownloadHTTPError: the server answered with an error status.
            exceptions.DownloadError: the transfer failed.
        """
        response = self._get(url)
        if response.status_code != 200:
            response.close()
            raise exceptions.DownloadHTTPError(
                f"{url}: HTTP {response.status_code}", response.status_code
            )
        return self._stream(response, url)

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """Fetch `url` starting at byte `offset` with an HTTP Range request.

        Returns:
            The offset the bytes really start at (0 if the server ignored the range) and
            the bytes.

        Raises:
            exceptions.DownloadHTTPError: the server answered with an error status.
            exceptions.DownloadError: the transfer failed or the range answer is inconsistent.
        """
        if offset <= 0:
            return 0, self.fetch(url)
        response = self._get(url, {"Range": f"bytes={offset}-"})
        if response.status_code == 200:
            logger.info("server ignored the range request: starting over")
            return 0, self._stream(response, url)
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                response.close()
                raise exceptions.DownloadError(f"{url}: server sent the wrong range")
            return offset, self._stream(response, url)
        response.close()
        if response.status_code == 416:
            raise exceptions.DownloadError(f"{url}: server refused the range (HTTP 416)")
        raise exceptions.DownloadHTTPError(
            f"{url}: HTTP {response.status_code}", response.status_code
        )

    def post_json(self, url: str, body: bytes, *, timeout: float) -> int:
        """POST a JSON body; returns the HTTP status (the answer's body is never read, so a
        server trickling it cannot hold the caller).

        Raises:
            exceptions.DownloadError: the server could not be reached.
        """
        self.requests_made += 1
        try:
            response = self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=(min(timeout, self.limits.connect_timeout), timeout),
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as e:
            raise exceptions.DownloadError(f"cannot post to {url}: {_reason(e)}") from e
        response.close()
        return response.status_code


def _reason(e: Exception) -> str:
    """A short reason without the nested reprs requests likes to print."""
    text = str(e)
    if isinstance(e, requests.exceptions.SSLError):
        return "TLS verification failed (server certificate not trusted or client rejected)"
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-transfer"
    if isinstance(e, requests.exceptions.ReadTimeout):
        return "read timed out"
    if isinstance(e, requests.exceptions.ConnectionError):
        return "connection failed"
    return text.splitlines()[0][:200] if text else type(e).__name__


class _Watchdog:
    """Bounds one transfer from a second thread: the whole-transfer time, the average rate
    after the grace period, and a stop request. A read blocked on a trickling server cannot be
    checked between chunks, so the watchdog shuts the socket down, which wakes it."""

    TICK = 0.2

    def __init__(self, response: requests.Response, limits: FetchLimits, stop: threading.Event):
        self.response = response
        self.limits = limits
        self.stop_requested = stop
        self.received = 0
        self.start = time.monotonic()
        self.verdict: Exception | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
        self._thread.start()

    def _judge(self) -> Exception | None:
        if self.stop_requested.is_set():
            return Interrupted("stopped while downloading; the download will resume")
        elapsed = time.monotonic() - self.start
        if elapsed > self.limits.max_seconds:
            return exceptions.SlowRetrievalError(
                f"transfer took longer than {self.limits.max_seconds:g} s"
            )
        # Counted generously (the chunk being read as if it had arrived), so a slow but
        # acceptable link is never cut off between two chunks.
        generous = self.received + CHUNK
        if elapsed > self.limits.grace_seconds and generous / elapsed < self.limits.min_rate:
            return exceptions.SlowRetrievalError(f"transfer slower than {self.limits.min_rate} B/s")
        return None

    def _run(self) -> None:
        while not self._done.wait(self.TICK):
            verdict = self._judge()
            if verdict is not None:
                self.verdict = verdict
                connection = getattr(self.response.raw, "connection", None)
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    def check(self, url: str) -> None:
        """Raise the watchdog's verdict (or the current one) in the reading thread."""
        verdict = self.verdict or self._judge()
        if verdict is None:
            return
        if isinstance(verdict, exceptions.SlowRetrievalError):
            raise exceptions.SlowRetrievalError(f"{verdict} ({url})")
        raise verdict

    def stop(self) -> None:
        self._done.set()
