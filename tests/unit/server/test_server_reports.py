"""Device reports: authenticated, for the device itself only, appended to the request audit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from repository.devices import add_device
from repository.layout import RepoPaths
from tests.helpers.server_repo import DelegatedRepo

REPORT = {
    "device_id": "dev-x1",
    "installed_version": "1.0.0",
    "slot": "b",
    "result": "success",
    "reason": "",
    "event": "committed",
}


def _audit(repo: DelegatedRepo) -> list[dict[str, Any]]:
    text = (repo.root / ".ota" / "server-audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_a_device_reports_for_itself(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    r = client.post("/api/v1/reports", json=REPORT, headers=auth)
    assert r.status_code == 201
    assert r.json == {"status": "recorded"}
    entry = _audit(delegated)[-1]
    assert entry["event"] == "report"
    assert entry["device"] == "dev-x1" and entry["hwid"] == "model-x"
    assert entry["installed_version"] == "1.0.0" and entry["slot"] == "b"
    assert entry["result"] == "success" and entry["device_event"] == "committed"


def test_a_device_may_not_report_for_another(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    add_device(RepoPaths(delegated.root), "dev-x2", "model-x")
    r = client.post("/api/v1/reports", json={**REPORT, "device_id": "dev-x2"}, headers=auth)
    assert r.status_code == 403
    entry = _audit(delegated)[-1]
    assert entry["flag"] == "report-for-other-device"
    assert entry["claimed"] == "dev-x2" and entry["device"] == "dev-x1"
    assert not [e for e in _audit(delegated) if e["event"] == "report"]


def test_reports_need_a_device_token(client: FlaskClient) -> None:
    assert client.post("/api/v1/reports", json=REPORT).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert client.post("/api/v1/reports", json=REPORT, headers=bad).status_code == 401


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (json.dumps({**REPORT, "slot": 7}).encode(), "application/json", 400),
        (
            json.dumps({k: v for k, v in REPORT.items() if k != "result"}).encode(),
            "application/json",
            400,
        ),
        (json.dumps({**REPORT, "reason": "x" * 600}).encode(), "application/json", 400),
        (json.dumps(REPORT).encode(), "text/plain", 415),
        (json.dumps({**REPORT, "reason": "x" * 40000}).encode(), "application/json", 413),
    ],
    ids=[
        "not-json",
        "not-object",
        "wrong-type",
        "missing-field",
        "long-field",
        "content-type",
        "too-large",
    ],
)
def test_bad_reports_are_refused_with_json_errors(
    client: FlaskClient, auth: dict[str, str], body: bytes, content_type: str, status: int
) -> None:
    r = client.post("/api/v1/reports", data=body, content_type=content_type, headers=auth)
    assert r.status_code == status
    assert r.is_json and "error" in r.json


def test_health_reports_the_published_timestamp(
    client: FlaskClient, delegated: DelegatedRepo
) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    ts = json.loads((delegated.root / "metadata" / "timestamp.json").read_bytes())
    assert r.json["status"] == "ok"
    assert r.json["timestamp_version"] == ts["signed"]["version"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cache-Control"] == "no-store"


def test_unknown_api_routes_are_small_json_errors(client: FlaskClient) -> None:
    r = client.get("/api/v1/nothing")
    assert r.status_code == 404 and r.json == {"error": "not found"}
    r = client.get("/api/v1/reports")
    assert r.status_code == 405 and r.json == {"error": "method not allowed"}
