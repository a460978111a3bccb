"""Publisher side of the upload API: send a signed role version and its files to the server.

The body is `multipart/form-data` streamed from disk with a known length (no firmware image is
held in memory): field `role`, file part `metadata` (the exact signed bytes), one file part
`target` per file, named by its target path. See `repository.upload` for the server's checks.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests

from repository.errors import BadInputError, RepositoryError
from repository.targetfiles import validate_target_path

PUBLISH_PATH = "/api/v1/publish"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class UploadError(RepositoryError):
    """The server refused the upload, or could not be reached. `status` is the HTTP status
    (0 when no answer came)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _MultipartBody:
    """A file-like multipart body of known length that reads files only as it is sent.

    A file is sent with exactly the length it had when the body was built: if it changed since
    (more or fewer bytes), reading fails with `UploadError` rather than send a body whose parts
    no longer match its Content-Length (which the server would misread).
    """

    def __init__(self, boundary: str, role: str, metadata: bytes, files: dict[str, Path]) -> None:
        b = boundary.encode()
        self._parts: list[bytes | Path] = []

        def header(name: str, filename: str | None) -> bytes:
            disposition = f'form-data; name="{name}"'
            if filename is not None:
                disposition += f'; filename="{filename}"'
                kind = "application/octet-stream"
                return (
                    f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                    f"Content-Type: {kind}\r\n\r\n"
                ).encode()
            return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()

        self._parts += [header("role", None), role.encode(), b"\r\n"]
        self._parts += [header("metadata", "metadata.json"), metadata, b"\r\n"]
        for target_path, source in sorted(files.items()):
            self._parts += [header("target", target_path), source, b"\r\n"]
        self._parts.append(b"--" + b + b"--\r\n")
        self._sizes = {p: p.stat().st_size for p in self._parts if isinstance(p, Path)}
        self._length = sum(self._sizes[p] if isinstance(p, Path) else len(p) for p in self._parts)
        self._index = 0
        self._current: BinaryIO | None = None
        self._left = 0
        self._buffer = b""

    def __len__(self) -> int:
        return self._length

    def _next_chunk(self, size: int) -> bytes:
        while self._index < len(self._parts):
            part = self._parts[self._index]
            if isinstance(part, bytes):
                self._index += 1
                return part
            if self._current is None:
                self._current = open(part, "rb")  # closed when exhausted, or by close()
                self._left = self._sizes[part]
            chunk = self._current.read(min(size, self._left) if self._left else 1)
            if chunk and self._left:
                self._left -= len(chunk)
                return chunk
            if chunk or self._left:
                raise UploadError(f"{part}: the file changed while it was read: try again")
            self._current.close()
            self._current = None
            self._index += 1
        return b""

    def read(self, size: int = -1) -> bytes:
        size = 1024 * 1024 if size is None or size < 0 else max(size, 1)
        while len(self._buffer) < size:
            chunk = self._next_chunk(size)
            if not chunk:
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


def _endpoint(server_url: str, token: str | None) -> str:
    parts = urlsplit(server_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadInputError(f"server URL must be https://HOST[:PORT]: {server_url!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise BadInputError(f"refusing plain http to {parts.hostname}: use https")
    if token is not None and ("\n" in token or "\r" in token):
        raise BadInputError("the upload token contains a line break")
    return server_url.rstrip("/") + PUBLISH_PATH


def upload_role(
    server_url: str,
    role: str,
    metadata: bytes,
    files: dict[str, Path],
    *,
    token: str | None = None,
    ca_bundle: Path | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Upload a signed new version of `role` with the files of its new or changed targets.

    Args:
        server_url: the update server, e.g. `https://ota.example.com`.
        role: the delegated role name.
        metadata: the exact signed bytes of the new version.
        files: target path -> local file with its bytes.
        token: upload token, if the server requires one (sent as a bearer token).
        ca_bundle: CA certificates to verify the server with (default: the system's).
        timeout: seconds to wait for the server at each step.

    Returns:
        The server's answer: `{"role": ..., "version": ..., "targets": [...]}`.

    Raises:
        BadInputError: a bad URL, target path or missing file (nothing was sent).
        UploadError: the server refused the upload (with its status and reason) or could not
            be reached.
    """
    url = _endpoint(server_url, token)
    for target_path, source in files.items():
        validate_target_path(target_path)
        if not Path(source).is_file():
            raise BadInputError(f"file not found for {target_path}: {source}")
    boundary = "ota-" + secrets.token_hex(16)
    body = _MultipartBody(boundary, role, metadata, {p: Path(s) for p, s in files.items()})
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(body)),
        "Accept": "application/json",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    verify: bool | str = str(ca_bundle) if ca_bundle is not None else True
    try:
        response = requests.post(url, data=body, headers=headers, verify=verify, timeout=timeout)
    except requests.exceptions.SSLError as e:
        if "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate verify failed" in str(e):
            raise UploadError(
                f"TLS verification of {server_url} failed (wrong CA bundle or certificate?)"
            ) from None
        raise UploadError(_closed_message(server_url)) from None
    except requests.exceptions.Timeout:
        raise UploadError(f"the update server at {server_url} did not answer in time") from None
    except requests.exceptions.ConnectionError:
        raise UploadError(_closed_message(server_url)) from None
    finally:
        body.close()
    return _answer(response)


def _closed_message(server_url: str) -> str:
    return (
        f"cannot reach the update server at {server_url} (or it closed the connection: "
        "is the upload larger than it accepts?)"
    )


def _answer(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError):
        data = None
    if response.status_code == 201 and isinstance(data, dict):
        return data
    reason = data.get("error") if isinstance(data, dict) else None
    reason = str(reason)[:300] if reason else response.reason or "no reason given"
    raise UploadError(
        f"the server refused the upload ({response.status_code}): {reason}", response.status_code
    )
