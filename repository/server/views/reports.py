"""`POST /api/v1/reports`: an authenticated device reports its install status, for itself only."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from repository.server.app import state
from repository.server.auth import authenticate_device
from repository.server.views.guard import auth_failed, throttled

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
    request.max_content_length = st.settings.max_report_bytes
    if request.mimetype != "application/json":
        return jsonify({"error": "reports are application/json"}), 415
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify({"error": "report is not a JSON object"}), 400
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
    st.audit.record("report", device=device.device_id, hwid=device.hwid, remote=remote, **fields)
    return jsonify({"status": "recorded"}), 201
