"""Settings, the device/upload-token command line, the shipped gunicorn config's refusals, the
publisher-side upload client, and health when the timestamp is stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.formparser import parse_form_data

from repository.errors import BadInputError
from repository.layout import RepoPaths, load_config, save_config
from repository.publisher.upload import UploadError, _MultipartBody, upload_role
from repository.server.settings import load_settings
from tests.helpers.repo import assert_one_line_error, cli_env, ota_repo
from tests.helpers.server_repo import DelegatedRepo


def test_settings_come_from_the_repository_config_and_are_overridden(
    delegated: DelegatedRepo,
) -> None:
    paths = RepoPaths(delegated.root)
    config = load_config(paths)
    config.extra["server"] = {"device_auth": False, "throttle_failures": 3}
    save_config(paths, config)
    settings = load_settings({"repo": str(delegated.root), "throttle_failures": "5"})
    assert settings.device_auth is False
    assert settings.throttle_failures == 5
    assert load_settings({"repo": str(delegated.root)}).throttle_failures == 3


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("device_auth", "maybe", "true or false"),
        ("max_upload_bytes", "-1", ">= 0"),
        ("max_upload_bytes", "lots", "must be a number"),
        ("shared_target_prefixes", ["firmware/"], "outside firmware/"),
        ("shared_target_prefixes", ["../x/"], "must be relative"),
        ("colour", "blue", "unknown server setting"),
    ],
    ids=["bool", "negative", "nan", "firmware-prefix", "dotdot-prefix", "unknown"],
)
def test_bad_settings_are_one_clear_error(
    delegated: DelegatedRepo, setting: str, value: object, message: str
) -> None:
    with pytest.raises(BadInputError, match=message):
        load_settings({"repo": str(delegated.root), setting: value})


def test_no_repository_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTA_REPO", raising=False)
    with pytest.raises(BadInputError, match="OTA_REPO"):
        load_settings({})
    with pytest.raises(BadInputError, match="no repository at"):
        load_settings({"repo": str(tmp_path)})


def test_device_commands(delegated: DelegatedRepo) -> None:
    added = ota_repo(delegated.root, "device", "add", "dev-1", "--hwid", "model-x")
    token = added.stdout.strip()
    assert token.startswith("otad_") and len(added.stdout.splitlines()) == 1
    assert "shown only now" in added.stderr and token not in added.stderr
    again = ota_repo(delegated.root, "device", "add", "dev-1", "--hwid", "model-x", check=False)
    assert_one_line_error(again, "exists already")
    bad = ota_repo(delegated.root, "device", "add", "../dev", "--hwid", "model-x", check=False)
    assert_one_line_error(bad, "device id must be")
    bad_model = ota_repo(delegated.root, "device", "add", "d2", "--hwid", "x/y", check=False)
    assert_one_line_error(bad_model, "hardware model must be")
    listed = ota_repo(delegated.root, "device", "list")
    assert "dev-1" in listed.stdout and "model-x" in listed.stdout and token not in listed.stdout
    ota_repo(delegated.root, "device", "remove", "dev-1")
    missing = ota_repo(delegated.root, "device", "remove", "dev-1", check=False)
    assert_one_line_error(missing, "no device")
    assert "no devices registered" in ota_repo(delegated.root, "device", "list").stdout


def test_upload_token_commands(delegated: DelegatedRepo) -> None:
    added = ota_repo(delegated.root, "upload-token", "add", "ci", "--role", "model-x")
    assert added.stdout.strip().startswith("otau_")
    listed = json.loads(ota_repo(delegated.root, "upload-token", "list", "--json").stdout)
    assert listed[0]["name"] == "ci" and listed[0]["roles"] == ["model-x"]
    ota_repo(delegated.root, "upload-token", "remove", "ci")
    assert_one_line_error(
        ota_repo(delegated.root, "upload-token", "remove", "ci", check=False), "no upload token"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set OTA_TLS_CERT and OTA_TLS_KEY"),
        ({"OTA_TLS_CERT": "/nonexistent.pem", "OTA_TLS_KEY": "/nonexistent.key"}, "not found"),
        ({"OTA_PLAINTEXT": "1", "OTA_WORKERS": "many"}, "OTA_WORKERS must be a positive"),
        ({"OTA_PLAINTEXT": "1", "OTA_DEVICE_CA": "/nonexistent-ca.pem"}, "device CA not found"),
    ],
    ids=["no-cert", "missing-cert", "bad-workers", "missing-ca"],
)
def test_gunicorn_config_refusals(env: dict[str, str], message: str) -> None:
    full = {k: v for k, v in cli_env().items() if not k.startswith("OTA_")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", "import repository.server.gunicorn_conf"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert message in proc.stderr


def test_the_multipart_body_is_what_the_server_parses(tmp_path: Path) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(os.urandom(3_000_000))
    body = _MultipartBody("bnd", "model-x", b'{"signed": {}}', {"firmware/m/fw.bin": firmware})
    raw = b""
    while chunk := body.read(65536):
        raw += chunk
    assert len(raw) == len(body)
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "multipart/form-data; boundary=bnd",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": __import__("io").BytesIO(raw),
    }
    _, form, files = parse_form_data(environ)
    assert form["role"] == "model-x"
    assert files["metadata"].read() == b'{"signed": {}}'
    (target,) = files.getlist("target")
    assert target.filename == "firmware/m/fw.bin"
    assert target.read() == firmware.read_bytes()
    for storage in files.values():
        storage.close()


@pytest.mark.parametrize(
    ("url", "files", "message"),
    [
        ("ftp://host", {}, "must be https"),
        ("http://ota.example.com", {}, "refusing plain http"),
        ("https://127.0.0.1:9", {"../x": Path("/etc/hostname")}, "target path"),
        ("https://127.0.0.1:9", {"firmware/m/fw.bin": Path("/nonexistent")}, "file not found"),
    ],
    ids=["scheme", "plain-http", "bad-path", "missing-file"],
)
def test_upload_role_refuses_before_sending(url: str, files: dict[str, Path], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        upload_role(url, "model-x", b"{}", files, timeout=2)


def test_upload_role_to_nothing_is_one_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UploadError, match="cannot reach the update server") as e:
        upload_role(f"http://127.0.0.1:{port}", "model-x", b"{}", {}, timeout=5)
    assert e.value.status == 0


def test_health_is_503_when_the_timestamp_expired(
    make_app: Callable[..., Flask], delegated: DelegatedRepo
) -> None:
    path = delegated.root / "metadata" / "timestamp.json"
    data = json.loads(path.read_bytes())
    data["signed"]["expires"] = "2000-01-01T00:00:00Z"
    path.write_text(json.dumps(data))
    r = make_app().test_client().get("/healthz")
    assert r.status_code == 503 and r.json["status"] == "expired"
    path.write_text("garbage")
    r = make_app().test_client().get("/healthz")
    assert r.status_code == 503 and r.json["status"] == "error"


def test_no_debug_and_an_internal_error_is_small_json(
    app: Flask, monkeypatch: pytest.MonkeyPatch, delegated: DelegatedRepo, tmp_path: Path
) -> None:
    import repository.server.views.uploads as uploads
    from tests.helpers.server_repo import publisher_update

    assert app.debug is False
    app.config["TESTING"] = False  # errors are handled as in production, not re-raised

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(uploads, "accept_upload", broken)
    metadata, _ = publisher_update(
        delegated, "model-x", {"firmware/model-x/fw-3.bin": b"x"}, tmp=tmp_path
    )
    import io

    r = app.test_client().post(
        "/api/v1/publish",
        data={
            "role": "model-x",
            "metadata": (io.BytesIO(metadata), "metadata.json"),
            "target": (io.BytesIO(b"x"), "firmware/model-x/fw-3.bin"),
        },
    )
    assert r.status_code == 500
    assert r.json == {"error": "internal error"}
    assert b"secret internal detail" not in r.data and b"Traceback" not in r.data


def test_a_hand_edited_registry_with_a_bad_model_is_refused(delegated: DelegatedRepo) -> None:
    from repository.devices import add_device, load_registry
    from repository.errors import CorruptRepositoryError

    add_device(RepoPaths(delegated.root), "dev-1", "model-x")
    path = delegated.root / ".ota" / "devices.json"
    data = json.loads(path.read_text())
    data["devices"]["dev-1"]["hwid"] = "model-x/../model-y"
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptRepositoryError, match="bad id"):
        load_registry(RepoPaths(delegated.root))
