"""`ota-publish add --server`: read the server's verified state (ngclient from the trusted root),
sign the role's next version with the publisher's key, upload to real gunicorn over TLS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.ceremony import client
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.http_repo import serve_folder
from tests.helpers.repo import BIN, assert_one_line_error, cli_env, ota_repo, published

ROLE = "firmware-model-x"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"), client_cn="publisher")


def _publish(
    server: str, tls: TlsFiles, repo: Path, tmp: Path, version: str, hwid: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    image = tmp / f"fw-{version}.bin"
    image.write_bytes(f"image {version}".encode() * 500)
    return subprocess.run(
        [
            str(BIN / "ota-publish"), "add", str(image), "--hwid", hwid, "--version", version,
            "--role", ROLE, "--key", f"encfile:{tmp / 'keys' / 'pub-x.key'}",
            "--server", server, "--root", str(repo / "metadata" / "1.root.json"),
            "--ca-bundle", str(tls.ca_cert), *extra,
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_publish_over_the_update_server(tls: TlsFiles, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    ota_repo(repo, "key", "generate", "pub-x", "--out", str(tmp_path / "keys"))
    ota_repo(
        repo, "delegate", ROLE, "--paths", "firmware/model-x/*",
        "--key", str(tmp_path / "keys" / "pub-x.pub"),
        "--sign-with", f"encfile:{tmp_path / 'keys' / 'pub-x.key'}", "--publish",
    )  # fmt: skip
    with run_gunicorn(
        repo,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"device_auth": False, "upload_tokens": False},
    ) as server:
        proc = _publish(server.url, tls, repo, tmp_path, "1.0.0", "model-x")
        assert proc.returncode == 0, proc.stderr
        assert f"in {ROLE} v2" in proc.stdout
        proc = _publish(server.url, tls, repo, tmp_path, "1.1.0", "model-x")
        assert proc.returncode == 0, proc.stderr

        before = published(repo)
        refused = _publish(server.url, tls, repo, tmp_path, "1.2.0", "model-y")
        assert_one_line_error(refused, "outside firmware-model-x's delegation")
        assert published(repo) == before

    updater, _ = client(repo, tmp_path / "device", (repo / "metadata" / "1.root.json").read_bytes())
    updater.refresh()
    for version in ("1.0.0", "1.1.0"):
        info = updater.get_targetinfo(f"firmware/model-x/fw-{version}.bin")
        assert info is not None
        assert json.loads(json.dumps(info.custom))["firmware"]["version"] == version
    ota_repo(repo, "verify")


def test_device_auth_server_with_upload_token_and_a_metadata_mirror(
    tls: TlsFiles, tmp_path: Path
) -> None:
    """Devices must authenticate to read; the publisher reads a mirror (verified from the
    trusted root all the same) and uploads with its upload token."""
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    ota_repo(repo, "key", "generate", "pub-x", "--out", str(tmp_path / "keys"))
    ota_repo(
        repo, "delegate", ROLE, "--paths", "firmware/model-x/*",
        "--key", str(tmp_path / "keys" / "pub-x.pub"),
        "--sign-with", f"encfile:{tmp_path / 'keys' / 'pub-x.key'}", "--publish",
    )  # fmt: skip
    token = ota_repo(repo, "upload-token", "add", "ci-x", "--role", ROLE).stdout.strip().split()[-1]
    token_file = tmp_path / "upload-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    with (
        run_gunicorn(repo, cert=tls.server_cert, key=tls.server_key, ca_cert=tls.ca_cert) as server,
        serve_folder(repo) as mirror,
    ):
        proc = _publish(
            server.url, tls, repo, tmp_path, "1.0.0", "model-x",
            "--token-file", str(token_file), "--metadata-url", f"{mirror}/metadata/",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert token not in proc.stdout + proc.stderr
    ota_repo(repo, "verify")
