"""The lean WSGI path for `GET`/`HEAD` of `metadata/` and `targets/`.

Static requests are the fleet's traffic, so they skip Flask's routing and request objects but
none of the checks: method, throttle, authentication, a strict path grammar, authorization by
hardware model, then an `openat()` walk with `O_NOFOLLOW` from directory descriptors opened
once (no symlink, `..` or absolute path can leave the tree; directories are never listed).
Bytes are served exactly as written through `wsgi.file_wrapper`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote

from repository.devices import Device
from repository.server.auth import (
    RegistryCache,
    authenticate_device,
    authenticate_uploader,
)
from repository.server.files import FileSource, Opened
from repository.server.requestlog import RequestAudit
from repository.server.respond import STATIC_SECURITY_HEADERS, json_error
from repository.server.settings import ServerSettings
from repository.server.throttle import Throttle

StartResponse = Callable[..., Any]

_VERSIONED = re.compile(r"^([1-9][0-9]{0,19})\.([A-Za-z0-9_+~-][A-Za-z0-9._+~-]{0,127})\.json\Z")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}\Z")
_HASH_PREFIX = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{128})\.")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)\Z")
_MAX_DEPTH = 16
BLOCK = 256 * 1024
IMMUTABLE = "max-age=31536000, immutable"


class BadPath(Exception):
    """The request path is not one this server could ever serve."""


def metadata_name(raw: str) -> tuple[str, str | None, int]:
    """Map the raw (still %-encoded) part after `/metadata/` to a file name.

    Returns:
        (file name, role or None for timestamp, version or 0).

    Raises:
        BadPath: anything but `timestamp.json` or `N.<role>.json` with a plain role name.
    """
    if raw == "timestamp.json":
        return raw, None, 0
    if "/" in raw:
        raise BadPath("metadata has no sub-folders")
    decoded = unquote(raw, errors="strict") if "%" in raw else raw
    m = _VERSIONED.match(decoded)
    if m is None or ".." in m.group(2):
        raise BadPath("not a metadata file name")
    role = m.group(2)
    return f"{m.group(1)}.{quote(role, '')}.json", role, int(m.group(1))


def target_parts(raw: str) -> tuple[list[str], str]:
    """Split the raw part after `/targets/` into checked segments and the target path.

    Raises:
        BadPath: encoded characters, empty, `.`/`..` or hidden segments, or too deep.
    """
    if "%" in raw:
        raise BadPath("target paths are never percent-encoded")
    parts = raw.split("/")
    if len(parts) > _MAX_DEPTH or not all(_SEGMENT.match(p) for p in parts):
        raise BadPath("not a target file name")
    name = _HASH_PREFIX.sub("", parts[-1], count=1)
    return parts, "/".join([*parts[:-1], name])


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _not_modified_since(header: str, mtime: float) -> bool:
    try:
        return int(mtime) <= parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (first, last) inclusive; None to serve the whole file.

    Raises:
        ValueError: the range cannot be satisfied (answer 416).
    """
    m = _RANGE.match(header.strip())
    if m is None:
        return None  # several ranges or another unit: RFC 9110 lets us send the whole file
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:
        count = int(last)
        if count == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - count), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ValueError("range outside the file")
    return start, end


class _Slice:
    """Iterates `count` bytes of `fd` from `start`, then closes it."""

    def __init__(self, fd: int, start: int, count: int) -> None:
        self._fd, self._pos, self._left = fd, start, count

    def __iter__(self) -> Iterator[bytes]:
        while self._left > 0:
            chunk = os.pread(self._fd, min(BLOCK, self._left), self._pos)
            if not chunk:
                break
            self._pos += len(chunk)
            self._left -= len(chunk)
            yield chunk

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StaticFiles:
    """Serves the two published folders; one instance per worker process."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: RegistryCache,
        throttle: Throttle,
        audit: RequestAudit,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.throttle = throttle
        self.audit = audit
        self._sources = {
            "metadata": FileSource(str(settings.paths.metadata)),
            "targets": FileSource(str(settings.paths.targets)),
        }
        scope = "private" if settings.device_auth else "public"
        self._immutable = f"{scope}, {IMMUTABLE}"
        age = settings.timestamp_max_age
        self._timestamp_cc = f"{scope}, max-age={age}" if age else f"{scope}, no-cache"
        self._shared = settings.shared_target_prefixes
        self._last_modified: dict[int, str] = {}

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse, folder: str, raw: str
    ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        source = environ.get("REMOTE_ADDR", "")
        if method not in ("GET", "HEAD"):
            return json_error(start_response, 405, "method not allowed", [("Allow", "GET, HEAD")])
        device: Device | None = None
        publisher: str | None = None
        if self.settings.device_auth:
            wait = self.throttle.blocked_for(source)
            if wait:
                self.audit.record("auth-throttled", remote=source, path=raw)
                return json_error(
                    start_response, 429, "too many requests", [("Retry-After", str(int(wait) + 1))]
                )
            registry = self.registry.get()
            device = authenticate_device(environ, registry)
            if device is None:
                uploader = authenticate_uploader(environ, registry)
                if uploader is None:
                    burst = self.throttle.failed(source)
                    extra = {"flag": "auth-failure-burst"} if burst else {}
                    self.audit.record(
                        "auth-failure", remote=source, path=f"{folder}/{raw}", **extra
                    )
                    return json_error(
                        start_response,
                        401,
                        "unauthorized",
                        [("WWW-Authenticate", 'Bearer realm="ota"')],
                    )
                publisher = f"publisher:{uploader.name}"  # reads metadata, never firmware
        device_id = device.device_id if device else publisher
        try:
            if folder == "metadata":
                name, role, version = metadata_name(raw)
                opened = self._sources["metadata"].open([name])
                content_type = "application/json"
                cache = self._timestamp_cc if role is None else self._immutable
                flag = self._regression_flag(device_id, role, version)
            else:
                parts, target_path = target_parts(raw)
                if publisher is not None or (
                    device is not None and not self._allowed(device, target_path)
                ):
                    other = device is not None and target_path.startswith("firmware/")
                    self.audit.record(
                        "download",
                        device=device_id,
                        path=f"targets/{raw}",
                        status=403,
                        remote=source,
                        **({"flag": "other-model-firmware"} if other else {}),
                    )
                    return json_error(start_response, 403, "forbidden")
                opened = self._sources["targets"].open(parts)
                content_type = "application/octet-stream"
                hashed = target_path != raw
                cache = self._immutable if hashed else self._timestamp_cc
                flag = None
        except (BadPath, UnicodeDecodeError):
            self.audit.record(
                "bad-path",
                device=device_id,
                path=environ.get("RAW_URI", raw)[:512],
                remote=source,
                flag="bad-path",
                status=400,
            )
            return json_error(start_response, 400, "bad path")
        except FileNotFoundError:
            self._log_download(device_id, folder, raw, 404, 0, source, None)
            return json_error(start_response, 404, "not found", cache="no-cache")
        return self._respond(
            environ,
            start_response,
            opened,
            content_type,
            cache,
            (device_id, folder, raw, source, flag),
        )

    def _regression_flag(self, device_id: str | None, role: str | None, version: int) -> str | None:
        if device_id is None or role is None:
            return None
        before = self.audit.metadata_regression(device_id, role, version)
        return None if before is None else "metadata-version-regression"

    def _allowed(self, device: Device, target_path: str) -> bool:
        if target_path.startswith("firmware/"):
            return target_path.startswith(f"firmware/{device.hwid}/")
        return target_path.startswith(self._shared) if self._shared else False

    def _log_download(
        self,
        device: str | None,
        folder: str,
        raw: str,
        status: int,
        sent: int,
        source: str,
        flag: str | None,
    ) -> None:
        if not self.settings.audit_downloads and flag is None and status < 400:
            return
        self.audit.download(device, f"{folder}/{raw}", status, sent, source, flag)

    def _http_date(self, mtime: float) -> str:
        second = int(mtime)
        found = self._last_modified.get(second)
        if found is None:
            if len(self._last_modified) > 4096:
                self._last_modified.clear()
            found = self._last_modified[second] = formatdate(second, usegmt=True)
        return found

    def _respond(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        opened: Opened,
        content_type: str,
        cache: str,
        log: tuple[str | None, str, str, str, str | None],
    ) -> Iterable[bytes]:
        size = opened.size
        name = log[2].rpartition("/")[2]
        m = _HASH_PREFIX.match(name)
        etag = f'"{name[: m.end() - 1]}"' if m else f'"{opened.ino:x}-{size:x}-{opened.mtime_ns:x}"'
        headers = [
            ("Content-Type", content_type),
            ("ETag", etag),
            ("Last-Modified", self._http_date(opened.mtime)),
            ("Cache-Control", cache),
            ("Accept-Ranges", "bytes"),
            *STATIC_SECURITY_HEADERS,
        ]
        inm = environ.get("HTTP_IF_NONE_MATCH")
        ims = environ.get("HTTP_IF_MODIFIED_SINCE")
        if (inm is not None and _etag_matches(inm, etag)) or (
            inm is None and ims is not None and _not_modified_since(ims, opened.mtime)
        ):
            opened.close()
            self._log_download(log[0], log[1], log[2], 304, 0, log[3], log[4])
            start_response("304 Not Modified", headers[1:])
            return []
        start, count, status = 0, size, "200 OK"
        range_header = environ.get("HTTP_RANGE")
        if_range = environ.get("HTTP_IF_RANGE")
        if range_header and (if_range is None or if_range.strip() == etag):
            try:
                span = parse_range(range_header, size)
            except ValueError:
                opened.close()
                self._log_download(log[0], log[1], log[2], 416, 0, log[3], log[4])
                return json_error(
                    start_response,
                    416,
                    "range not satisfiable",
                    [("Content-Range", f"bytes */{size}")],
                )
            if span is not None:
                start, count, status = span[0], span[1] - span[0] + 1, "206 Partial Content"
                headers.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{size}"))
        headers.append(("Content-Length", str(count)))
        head = environ["REQUEST_METHOD"] == "HEAD"
        sent = 0 if head else count
        self._log_download(log[0], log[1], log[2], int(status[:3]), sent, log[3], log[4])
        start_response(status, headers)
        if head:
            opened.close()
            return []
        if opened.data is not None:
            return [opened.data[start : start + count]]
        assert opened.fd is not None
        if start == 0 and count == size:
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None:
                result: Iterable[bytes] = wrapper(os.fdopen(opened.fd, "rb", buffering=0), BLOCK)
                return result
        return _Slice(opened.fd, start, count)
