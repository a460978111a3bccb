"""Device authentication, authorization by hardware model, throttling, suspicious patterns."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from repository.devices import add_device, load_registry, remove_device
from repository.layout import RepoPaths
from tests.helpers.server_repo import DelegatedRepo


def _audit(repo: DelegatedRepo) -> list[dict[str, Any]]:
    text = (repo.root / ".ota" / "server-audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _target(repo: DelegatedRepo) -> str:
    (found,) = (repo.root / "targets" / "firmware" / "model-x").glob("*.fw-1.0.0.bin")
    return f"/targets/firmware/model-x/{found.name}"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer otad_wrong", "Basic dXNlcjpwYXNz", "bearer x y"],
    ids=["none", "empty", "no-token", "blank-token", "wrong-token", "basic", "garbage"],
)
def test_requests_without_a_valid_token_get_401_with_no_detail(
    client: FlaskClient, token: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    for path in ("/metadata/timestamp.json", "/metadata/1.root.json", "/metadata/2.root.json"):
        r = client.get(path, headers=headers)
        assert r.status_code == 401
        assert r.json == {"error": "unauthorized"}
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_device_fetches_its_own_models_firmware(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    assert client.get(_target(delegated), headers=auth).status_code == 200


def test_another_models_firmware_is_403_and_flagged(
    client: FlaskClient, delegated: DelegatedRepo
) -> None:
    token_y = add_device(RepoPaths(delegated.root), "dev-y1", "model-y")
    r = client.get(_target(delegated), headers={"Authorization": f"Bearer {token_y}"})
    assert r.status_code == 403
    assert r.json == {"error": "forbidden"}
    last = _audit(delegated)[-1]
    assert last["device"] == "dev-y1"
    assert last["flag"] == "other-model-firmware"
    assert last["status"] == 403


def test_non_firmware_targets_only_under_shared_prefixes(
    make_app: Callable[..., Flask], auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    shared = delegated.root / "targets" / "common" / "certs"
    shared.mkdir(parents=True)
    (shared / "ca.pem").write_bytes(b"pem")
    closed = make_app().test_client()
    assert closed.get("/targets/common/certs/ca.pem", headers=auth).status_code == 403
    opened = make_app(shared_target_prefixes=["common/"]).test_client()
    r = opened.get("/targets/common/certs/ca.pem", headers=auth)
    assert r.status_code == 200 and r.data == b"pem"


def test_device_auth_off_serves_everyone(make_app: Callable[..., Flask]) -> None:
    client = make_app(device_auth=False).test_client()
    r = client.get("/metadata/timestamp.json")
    assert r.status_code == 200
    assert "public" in r.headers["Cache-Control"]


def test_a_removed_device_is_refused(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    assert client.get("/metadata/timestamp.json", headers=auth).status_code == 200
    remove_device(RepoPaths(delegated.root), "dev-x1")
    assert client.get("/metadata/timestamp.json", headers=auth).status_code == 401


def test_tokens_are_stored_only_as_hashes(token: str, delegated: DelegatedRepo) -> None:
    stored = (delegated.root / ".ota" / "devices.json").read_text()
    assert token not in stored
    assert token.removeprefix("otad_") not in stored
    device = load_registry(RepoPaths(delegated.root)).device_for_token(token)
    assert device is not None and device.hwid == "model-x"
    assert (delegated.root / ".ota" / "devices.json").stat().st_mode & 0o077 == 0


def test_repeated_failures_from_one_source_are_throttled(
    make_app: Callable[..., Flask], auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    client = make_app(throttle_failures=5, throttle_window=60, throttle_block=60).test_client()
    statuses = [
        client.get(
            "/metadata/timestamp.json", headers={"Authorization": f"Bearer bad{i}"}
        ).status_code
        for i in range(7)
    ]
    assert statuses == [401] * 5 + [429] * 2
    # even a valid token waits until the block ends: guessing gets no signal
    blocked = client.get("/metadata/timestamp.json", headers=auth)
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    other = client.get(
        "/metadata/timestamp.json", headers=auth, environ_base={"REMOTE_ADDR": "127.0.0.9"}
    )
    assert other.status_code == 200
    flags = [e for e in _audit(delegated) if e.get("flag") == "auth-failure-burst"]
    assert len(flags) == 1 and flags[0]["remote"] == "127.0.0.1"


def test_failures_are_audited_without_the_token(
    client: FlaskClient, delegated: DelegatedRepo
) -> None:
    client.get("/metadata/timestamp.json", headers={"Authorization": "Bearer otad_guess123"})
    entry = _audit(delegated)[-1]
    assert entry["event"] == "auth-failure"
    assert "otad_guess123" not in json.dumps(_audit(delegated))


def test_a_device_asking_for_older_metadata_is_flagged(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    assert client.get("/metadata/3.snapshot.json", headers=auth).status_code == 200
    assert client.get("/metadata/2.snapshot.json", headers=auth).status_code == 200
    last = _audit(delegated)[-1]
    assert last["flag"] == "metadata-version-regression"
    assert client.get("/metadata/3.snapshot.json", headers=auth).status_code == 200
    assert "flag" not in _audit(delegated)[-1]


def test_the_registry_is_reread_when_it_changes(
    client: FlaskClient, delegated: DelegatedRepo, tmp_path: Path
) -> None:
    token = add_device(RepoPaths(delegated.root), "late-device", "model-y")
    r = client.get("/metadata/timestamp.json", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_a_publisher_token_reads_metadata_but_no_firmware(
    client: FlaskClient, delegated: DelegatedRepo
) -> None:
    from repository.devices import add_uploader

    token = add_uploader(RepoPaths(delegated.root), "ci-x", ["model-x"])
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/metadata/timestamp.json", headers=headers).status_code == 200
    assert client.get(_target(delegated), headers=headers).status_code == 403
    assert _audit(delegated)[-1]["device"] == "publisher:ci-x"


def test_the_request_log_follows_rotation(
    app: Flask, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    log = delegated.root / ".ota" / "server-audit.log"
    client = app.test_client()
    client.get("/metadata/timestamp.json", headers=auth)
    log.rename(log.with_suffix(".log.1"))
    app.extensions["ota"].audit._checked = 0.0  # as if a second had passed
    client.get("/metadata/1.root.json", headers=auth)
    assert json.loads(log.read_text())["path"] == "metadata/1.root.json"
    rotated = log.with_suffix(".log.1").read_text().splitlines()
    assert json.loads(rotated[-1])["path"] == "metadata/timestamp.json"


def test_throttling_is_shared_by_worker_processes(
    make_app: Callable[..., Flask], auth: dict[str, str]
) -> None:
    """Two apps on one repository stand for two gunicorn workers: failures add up."""
    settings = {"throttle_failures": 4, "throttle_window": 60, "throttle_block": 60}
    worker_a, worker_b = make_app(**settings).test_client(), make_app(**settings).test_client()
    bad = {"Authorization": "Bearer nope"}
    assert worker_a.get("/metadata/timestamp.json", headers=bad).status_code == 401
    assert worker_b.get("/metadata/timestamp.json", headers=bad).status_code == 401
    assert worker_a.get("/metadata/timestamp.json", headers=bad).status_code == 401
    assert worker_b.get("/metadata/timestamp.json", headers=bad).status_code == 401  # 4th: block
    assert worker_a.get("/metadata/timestamp.json", headers=auth).status_code == 429
    assert worker_b.get("/metadata/timestamp.json", headers=auth).status_code == 429


def test_throttling_can_be_turned_off(make_app: Callable[..., Flask]) -> None:
    client = make_app(throttle_failures=0).test_client()
    bad = {"Authorization": "Bearer nope"}
    assert {client.get("/metadata/timestamp.json", headers=bad).status_code for _ in range(30)} == {
        401
    }


def test_a_registry_corrupted_while_serving_keeps_the_last_good_one(
    client: FlaskClient,
    auth: dict[str, str],
    delegated: DelegatedRepo,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert client.get("/metadata/timestamp.json", headers=auth).status_code == 200
    (delegated.root / ".ota" / "devices.json").write_text("{not json")
    assert client.get("/metadata/timestamp.json", headers=auth).status_code == 200
    assert "keeping the registry read before" in caplog.text
