"""Device and publisher authentication, and throttling of repeated failures.

A device proves who it is with `Authorization: Bearer <token>` (the registry stores only the
token's SHA-256) or, under mutual TLS, with a client certificate issued by the device CA whose
subject commonName is its registered device id. Failures get no detail. A source that fails
too often within a window is refused (429) for a while before any token is even looked at.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from typing import Any

from repository.devices import Device, Registry, Uploader, load_registry, registry_path
from repository.errors import CorruptRepositoryError
from repository.layout import RepoPaths

logger = logging.getLogger(__name__)


class RegistryCache:
    """The device registry, re-read when its file changes (checked at most every `interval`)."""

    def __init__(self, paths: RepoPaths, interval: float) -> None:
        self._path = registry_path(paths)
        self._paths = paths
        self._interval = interval
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._registry = Registry.empty()
        self._reload()

    def _reload(self) -> None:
        try:
            st = os.stat(self._path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            try:
                self._registry = load_registry(self._paths)
            except CorruptRepositoryError as e:
                if self._stamp is None:
                    raise  # at start: refuse to run on a registry that cannot be read
                # While serving: keep the last good registry rather than lock the fleet out.
                logger.error("%s: keeping the registry read before", e)
            self._stamp = stamp

    def get(self) -> Registry:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            with self._lock:
                if now - self._checked >= self._interval:
                    self._reload()
                    self._checked = now
        return self._registry


def bearer_token(environ: dict[str, Any]) -> str | None:
    header: str = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def peer_common_name(environ: dict[str, Any]) -> str | None:
    """The commonName of a verified client certificate (mutual TLS under gunicorn), if any."""
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        if sock.getpeercert(binary_form=True) is None:  # cheap: no certificate was sent
            return None
        cert = sock.getpeercert()
    except (ValueError, OSError):
        return None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName" and isinstance(attribute[1], str):
                return attribute[1]
    return None


def authenticate_device(environ: dict[str, Any], registry: Registry) -> Device | None:
    """The device making this request, or None. A token and a certificate must agree."""
    token = bearer_token(environ)
    cn = peer_common_name(environ)
    if token is not None:
        device = registry.device_for_token(token)
        if device is None or (cn is not None and cn != device.device_id):
            return None
        return device
    if cn is not None:
        return registry.devices.get(cn)
    return None


def authenticate_uploader(environ: dict[str, Any], registry: Registry) -> Uploader | None:
    token = bearer_token(environ)
    return registry.uploader_for_token(token) if token is not None else None
