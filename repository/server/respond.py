"""Small shared pieces of every response: security headers and JSON errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Strict-Transport-Security", "max-age=31536000"),
)


# For static JSON and octet-stream bodies only these two matter (no HTML is ever served: framing,
# scripts and referrers do not apply); fewer headers is measurable work saved per request.
STATIC_SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Strict-Transport-Security", "max-age=31536000"),
)


def json_error(
    start_response: Callable[..., Any],
    status: int,
    message: str,
    extra: list[tuple[str, str]] | None = None,
    *,
    cache: str = "no-store",
) -> list[bytes]:
    """A raw-WSGI `{"error": message}` response."""
    body = json.dumps({"error": message}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", cache),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]
