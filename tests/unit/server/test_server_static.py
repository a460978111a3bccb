"""Static serving of metadata/ and targets/: exact bytes, headers, conditional GET, Range,
methods, missing files, no listing, no way out of the tree."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers.server_repo import DelegatedRepo

FW_PATH = "firmware/model-x/fw-1.0.0.bin"


def _target_url(repo: DelegatedRepo, path: str = FW_PATH) -> tuple[str, bytes]:
    directory, _, name = path.rpartition("/")
    (found,) = (repo.root / "targets" / directory).glob(f"*.{name}")
    return f"/targets/{directory}/{found.name}", found.read_bytes()


def test_metadata_is_served_as_the_exact_bytes_on_disk(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    for name in ("timestamp.json", "1.root.json", "2.snapshot.json", "1.model-x.json"):
        on_disk = (delegated.root / "metadata" / name).read_bytes()
        r = client.get(f"/metadata/{name}", headers=auth)
        assert r.status_code == 200, name
        assert r.data == on_disk
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["Content-Length"] == str(len(on_disk))


def test_cache_headers_fit_tuf(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    ts = client.get("/metadata/timestamp.json", headers=auth)
    assert "no-cache" in ts.headers["Cache-Control"]
    root = client.get("/metadata/1.root.json", headers=auth)
    assert "immutable" in root.headers["Cache-Control"]
    url, _ = _target_url(delegated)
    target = client.get(url, headers=auth)
    assert "immutable" in target.headers["Cache-Control"]
    assert target.headers["Content-Type"] == "application/octet-stream"
    missing = client.get("/metadata/2.root.json", headers=auth)
    assert missing.headers["Cache-Control"] == "no-cache"
    for r in (ts, root, target, missing):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "private" in r.headers["Cache-Control"] or r is missing  # device auth is on


def test_next_root_version_is_404(client: FlaskClient, auth: dict[str, str]) -> None:
    r = client.get("/metadata/2.root.json", headers=auth)
    assert r.status_code == 404
    assert r.json == {"error": "not found"}


def test_target_bytes_etag_and_conditional_get(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    url, data = _target_url(delegated)
    r = client.get(url, headers=auth)
    assert r.status_code == 200 and r.data == data
    assert r.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    again = client.get(url, headers={**auth, "If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == r.headers["ETag"]
    other = client.get(url, headers={**auth, "If-None-Match": '"something-else"'})
    assert other.status_code == 200
    ims = client.get(url, headers={**auth, "If-Modified-Since": r.headers["Last-Modified"]})
    assert ims.status_code == 304


def test_timestamp_etag_changes_when_a_new_version_is_written(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    first = client.get("/metadata/timestamp.json", headers=auth)
    assert (
        client.get(
            "/metadata/timestamp.json", headers={**auth, "If-None-Match": first.headers["ETag"]}
        ).status_code
        == 304
    )
    delegated.open().refresh(margin_fraction=2)  # re-sign snapshot and timestamp now
    second = client.get(
        "/metadata/timestamp.json", headers={**auth, "If-None-Match": first.headers["ETag"]}
    )
    assert second.status_code == 200
    assert second.data == (delegated.root / "metadata" / "timestamp.json").read_bytes()


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=0-99", 206, (0, 99)),
        ("bytes=100-", 206, (100, None)),
        ("bytes=-10", 206, (-10, None)),
        ("bytes=5-5", 206, (5, 5)),
        ("bytes=0-999999999", 206, (0, None)),
        ("bytes=0-1,5-6", 200, None),
        ("items=0-1", 200, None),
        ("bytes=999999-", 416, None),
        ("bytes=9-3", 416, None),
    ],
    ids=[
        "first-100",
        "open-end",
        "suffix",
        "one-byte",
        "past-end",
        "multi",
        "unit",
        "beyond",
        "backwards",
    ],
)
def test_range_requests(
    client: FlaskClient,
    auth: dict[str, str],
    delegated: DelegatedRepo,
    header: str,
    status: int,
    span: tuple[int, int | None] | None,
) -> None:
    url, data = _target_url(delegated)
    r = client.get(url, headers={**auth, "Range": header})
    assert r.status_code == status
    if status == 206:
        assert span is not None
        start, end = span
        expected = data[start:] if end is None else data[start : end + 1]
        assert r.data == expected
        first = start % len(data)
        assert (
            r.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
        )
    elif status == 200:
        assert r.data == data
    else:
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_if_range_with_a_stale_etag_sends_the_whole_file(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    url, data = _target_url(delegated)
    r = client.get(url, headers={**auth, "Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.data == data


def test_head_sends_headers_only(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    url, data = _target_url(delegated)
    r = client.head(url, headers=auth)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert r.data == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_on_static_routes(
    client: FlaskClient, auth: dict[str, str], method: str, delegated: DelegatedRepo
) -> None:
    before = (delegated.root / "metadata" / "timestamp.json").read_bytes()
    r = client.open("/metadata/timestamp.json", method=method, headers=auth, data=b"x")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"
    assert (delegated.root / "metadata" / "timestamp.json").read_bytes() == before


@pytest.mark.parametrize(
    "path",
    [
        "/metadata/",
        "/targets/",
        "/targets/firmware",
        "/targets/firmware/model-x",
        "/metadata/3.model-x.json",
        "/targets/firmware/model-x/fw-9.bin",
        "/",
        "/index.html",
    ],
)
def test_folders_are_never_listed_and_missing_files_are_404(
    make_app: Callable[..., Flask], path: str
) -> None:
    r = make_app(device_auth=False).test_client().get(path)
    assert r.status_code == 404
    assert r.is_json


def test_symlinks_are_not_followed_out_of_the_tree(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    model_dir = delegated.root / "targets" / "firmware" / "model-x"
    os.symlink(secret, model_dir / "link.bin")
    os.symlink(tmp_path, delegated.root / "targets" / "firmware" / "model-z")
    os.symlink(delegated.root / ".ota" / "config.json", delegated.root / "metadata" / "9.x.json")
    for path in (
        "/targets/firmware/model-x/link.bin",
        "/targets/firmware/model-z/secret.txt",
        "/metadata/9.x.json",
    ):
        r = client.get(path, headers=auth)
        assert r.status_code in (403, 404), path
        assert b"secret" not in r.data and b"signers" not in r.data


def test_private_folder_is_never_served(client: FlaskClient, auth: dict[str, str]) -> None:
    for path in ("/.ota/config.json", "/.ota/keys/root.key", "/metadata/.ota", "/.ota/"):
        r = client.get(path, headers=auth)
        assert r.status_code in (400, 404), path
        assert b"encfile" not in r.data


def test_a_download_is_audited_with_device_path_status_and_bytes(
    client: FlaskClient, auth: dict[str, str], delegated: DelegatedRepo
) -> None:
    url, data = _target_url(delegated)
    client.get(url, headers=auth)
    lines = (delegated.root / ".ota" / "server-audit.log").read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["event"] == "download"
    assert entry["device"] == "dev-x1"
    assert entry["path"] == url.lstrip("/")
    assert entry["status"] == 200
    assert entry["bytes"] == len(data)
