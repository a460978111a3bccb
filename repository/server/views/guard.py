"""Throttling and authentication failure answers shared by the API views."""

from __future__ import annotations

from flask import Response, jsonify, request

from repository.server.app import state


def throttled() -> tuple[Response, int] | None:
    """A 429 answer if this source is blocked after repeated auth failures, else None."""
    st = state()
    source = request.remote_addr or ""
    wait = st.throttle.blocked_for(source)
    if not wait:
        return None
    st.audit.record("auth-throttled", remote=source, path=request.path)
    response = jsonify({"error": "too many requests"})
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response, 429


def auth_failed(path: str) -> tuple[Response, int]:
    """Count the failure, audit it, and answer 401 with no detail."""
    st = state()
    source = request.remote_addr or ""
    burst = st.throttle.failed(source)
    extra = {"flag": "auth-failure-burst"} if burst else {}
    st.audit.record("auth-failure", remote=source, path=path, **extra)
    response = jsonify({"error": "unauthorized"})
    response.headers["WWW-Authenticate"] = 'Bearer realm="ota"'
    return response, 401
