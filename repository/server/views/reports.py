"""`POST /api/v1/reports`: an authenticated device reports its install status, for itself only.

A report that carries a `report_id` (32 lower-case hex characters, the same on every retry) is
stored once per device and id: a retry after a lost answer gets the same 201, and is not stored
again. Reports without one (older devices) are stored as they come.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from repository.server.app import state
from repository.server.auth import authenticate_device
from repository.server.reportids import REPORT_ID, ReportStoreError
from repository.server.views.guard import auth_failed, throttled

logger = logging.getLogger(__name__)

bp = Blueprint("reports", __name__)

_FIELDS = {
    "device_id": 64,
    "installed_version": 64,
    "slot": 16,
    "result": 32,
    "reason": 512,
    "event": 64,
}
_REQUIRED = ("device_id", "installed_version", "result")


@bp.post("/api/v1/reports")
def report() -> tuple[Response, int]:
    st = state()
    refused = throttled()
    if refused is not None:
        return refused
    device = authenticate_device(request.environ, st.registry.get())
    if device is None:
        return auth_failed("/api/v1/reports")
    limit = st.settings.max_report_bytes
    if request.mimetype != "application/json":
        return jsonify({"error": "reports are application/json"}), 415
    if request.content_length is not None and request.content_length > limit:
        return jsonify({"error": "report too large"}), 413
    body = request.stream.read(limit + 1)  # a chunked body has no length: read one byte more
    if len(body) > limit:
        return jsonify({"error": "report too large"}), 413
    data = _parse(body)
    if not isinstance(data, dict):
        return jsonify({"error": "report is not a JSON object"}), 400
    report_id = data.get("report_id")
    if report_id is not None and not (isinstance(report_id, str) and REPORT_ID.match(report_id)):
        return jsonify({"error": "report_id must be 32 lower-case hex characters"}), 400
    entry: dict[str, str] = {}
    for name, limit in _FIELDS.items():
        value = data.get(name)
        if value is None:
            if name in _REQUIRED:
                return jsonify({"error": f"report needs {name}"}), 400
            continue
        if not isinstance(value, str) or len(value) > limit:
            return jsonify({"error": f"{name} must be a string of at most {limit} chars"}), 400
        entry[name] = value
    remote = request.remote_addr or ""
    if entry["device_id"] != device.device_id:
        st.audit.record(
            "report-refused",
            device=device.device_id,
            claimed=entry["device_id"],
            remote=remote,
            flag="report-for-other-device",
            status=403,
        )
        return jsonify({"error": "forbidden"}), 403
    fields = {k: v for k, v in entry.items() if k not in ("device_id", "event")}
    if "event" in entry:
        fields["device_event"] = entry["event"]  # "event" names the audit record itself
    if report_id is not None:
        fields["report_id"] = report_id

    def store() -> None:
        st.audit.record(
            "report", device=device.device_id, hwid=device.hwid, remote=remote, **fields
        )

    if report_id is None:
        store()
    else:
        try:
            st.reports.store_once(device.device_id, report_id, store)
        except ReportStoreError as e:
            logger.error("report from %s not stored: %s", device.device_id, e)
            response = jsonify({"error": "cannot store reports now, retry later"})
            response.headers["Retry-After"] = "30"
            return response, 503
    return jsonify({"status": "recorded"}), 201


def _parse(body: bytes) -> Any:
    """The JSON value of `body`, or None (not UTF-8 JSON, or nested too deeply to parse)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
