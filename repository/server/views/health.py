"""`GET /healthz`: is the published timestamp readable and unexpired (the refresh timer runs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify

from repository.server.app import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    path = state().settings.paths.metadata / "timestamp.json"
    try:
        signed = json.loads(path.read_bytes())["signed"]
        version = int(signed["version"])
        expires = datetime.fromisoformat(signed["expires"].replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError):
        return jsonify({"status": "error", "error": "timestamp.json unreadable"}), 503
    body = {
        "status": "ok",
        "timestamp_version": version,
        "timestamp_expires": expires.isoformat(),
    }
    if expires <= datetime.now(UTC):
        body["status"] = "expired"
        return jsonify(body), 503
    return jsonify(body), 200
