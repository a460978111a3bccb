"""The upload check keeps published images unchanged and applies the repository's configured
limits (fast, through the Flask test client; tests/integration/test_publisher_integrity.py
runs the same refusals through gunicorn over TLS)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from repository.errors import BadInputError
from tests.helpers.repo import firmware_custom, published
from tests.helpers.server_repo import DelegatedRepo, publisher_update

FW1 = "firmware/model-x/fw-1.0.0.bin"  # published by the `delegated` fixture
FW9 = "firmware/model-x/fw-9.0.0.bin"


def _set_limits(repo: DelegatedRepo, limits: object) -> None:
    config_file = repo.root / ".ota" / "config.json"
    config = json.loads(config_file.read_text())
    config["limits"] = limits
    config_file.write_text(json.dumps(config))


def test_a_changed_published_image_is_409_and_changes_nothing(
    make_app: Callable[..., Flask],
    delegated: DelegatedRepo,
    tmp_path: Path,
    upload: Callable[..., Any],
) -> None:
    client = make_app(device_auth=False).test_client()
    metadata, files = publisher_update(delegated, "model-x", {FW1: b"other"}, tmp=tmp_path)
    before = published(delegated.root)
    r = upload(client, "model-x", metadata, files)
    assert r.status_code == 409
    assert r.json == {
        "error": f"{FW1} is published already with other bytes: a published image never "
        "changes, publish a new version"
    }
    assert published(delegated.root) == before


def test_a_raised_counter_bound_is_applied_by_the_server(
    make_app: Callable[..., Flask],
    delegated: DelegatedRepo,
    tmp_path: Path,
    upload: Callable[..., Any],
) -> None:
    """The recovery path: the security team raises limits.max_security_counter."""
    custom = firmware_custom("9.0.0", "model-x", counter=2**40)
    metadata, files = publisher_update(
        delegated, "model-x", {FW9: b"nine"}, custom=custom, tmp=tmp_path
    )
    r = upload(make_app(device_auth=False).test_client(), "model-x", metadata, files)
    assert r.status_code == 400 and "above the maximum 2147483647" in r.json["error"]
    _set_limits(delegated, {"max_security_counter": 2**41})
    r = upload(make_app(device_auth=False).test_client(), "model-x", metadata, files)
    assert r.status_code == 201, r.json


def test_a_lowered_bound_does_not_block_images_published_before(
    make_app: Callable[..., Flask],
    delegated: DelegatedRepo,
    tmp_path: Path,
    upload: Callable[..., Any],
) -> None:
    """Only new images are held to the counter bound: listed ones are already out there."""
    custom = firmware_custom("9.0.0", "model-x", counter=100)
    metadata, files = publisher_update(
        delegated, "model-x", {FW9: b"nine"}, custom=custom, tmp=tmp_path / "a"
    )
    assert (
        upload(make_app(device_auth=False).test_client(), "model-x", metadata, files).status_code
        == 201
    )
    _set_limits(delegated, {"max_security_counter": 50})
    client = make_app(device_auth=False).test_client()
    fw10 = "firmware/model-x/fw-10.0.0.bin"
    metadata, files = publisher_update(delegated, "model-x", {fw10: b"ten"}, tmp=tmp_path / "b")
    assert upload(client, "model-x", metadata, files).status_code == 201


def test_a_bad_limits_section_stops_the_server_at_start(
    make_app: Callable[..., Flask], delegated: DelegatedRepo
) -> None:
    _set_limits(delegated, {"max_security_counter": 2**63})
    with pytest.raises(BadInputError, match="max_security_counter must be an integer from 1"):
        make_app()
