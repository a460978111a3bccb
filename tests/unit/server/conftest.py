"""Fixtures for update-server unit tests: a delegated dev repository, an app, a device."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from repository.devices import add_device
from repository.layout import RepoPaths
from repository.server import create_app
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update


def post_upload(
    client: FlaskClient,
    role: str,
    metadata: bytes,
    files: dict[str, Path],
    headers: dict[str, str] | None = None,
) -> Any:
    """POST an upload the way `upload_role` does (multipart: role, metadata, target parts)."""
    data: dict[str, Any] = {
        "role": role,
        "metadata": (io.BytesIO(metadata), "metadata.json"),
        "target": [(io.BytesIO(p.read_bytes()), t) for t, p in files.items()],
    }
    return client.post(
        "/api/v1/publish", data=data, content_type="multipart/form-data", headers=headers or {}
    )


FW_X1 = b"\x7fELF model-x 1.0.0" * 500


@pytest.fixture
def delegated(tmp_path: Path) -> DelegatedRepo:
    """A repository with roles model-x and model-y; model-x v1 lists fw-1.0.0 (uploaded)."""
    repo = make_delegated_repo(tmp_path / "repo", ("model-x", "model-y"))
    metadata, files = publisher_update(
        repo, "model-x", {"firmware/model-x/fw-1.0.0.bin": FW_X1}, tmp=tmp_path / "pub"
    )
    app = create_app({"repo": str(repo.root), "device_auth": False, "upload_tokens": False})
    answer = post_upload(app.test_client(), "model-x", metadata, files)
    assert answer.status_code == 201, answer.json
    return repo


@pytest.fixture
def upload() -> Callable[..., Any]:
    return post_upload


@pytest.fixture
def make_app(delegated: DelegatedRepo) -> Callable[..., Flask]:
    def make(**settings: Any) -> Flask:
        """An app on the delegated repository; uploads opted out of tokens unless asked."""
        config = {
            "repo": str(delegated.root),
            "registry_reload_interval": 0,
            "upload_tokens": False,
            **settings,
        }
        app = create_app(config)
        app.config["TESTING"] = True
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token(delegated: DelegatedRepo) -> str:
    return add_device(RepoPaths(delegated.root), "dev-x1", "model-x")


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
