"""Path traversal against real gunicorn over TLS: every form is refused (400 or 404) and no
byte of the private folder, the keys or the system leaks. Requests are written by hand on a TLS
socket so that no client library normalises them first."""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from repository.devices import add_device
from repository.layout import RepoPaths
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import GunicornServer, run_gunicorn
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo

TRAVERSALS = [
    "/metadata/../.ota/config.json",
    "/targets/../.ota/config.json",
    "/metadata/%2e%2e/.ota/config.json",
    "/metadata/%2E%2E%2F.ota%2Fconfig.json",
    "/targets/firmware/model-x/..%2f..%2f..%2f.ota%2fconfig.json",
    "/targets/%2e%2e%2f%2e%2e%2f.ota/keys/root.key",
    "/metadata/..%5c.ota%5cconfig.json",
    "/metadata/..\\.ota\\config.json",
    "/targets/firmware/model-x/%00.bin",
    "/metadata/timestamp.json%00.txt",
    "//etc/passwd",
    "/metadata//etc/passwd",
    "/targets//etc/passwd",
    "/metadata/%2fetc%2fpasswd",
    "/.ota/config.json",
    "/.ota/keys/timestamp.key",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/metadata/%252e%252e/.ota/config.json",
    "/metadata/..%c0%af.ota/config.json",
    "/targets/firmware/model-x/....//....//.ota/config.json",
    "/metadata/./timestamp.json/../../.ota/config.json",
    "/targets/firmware/./model-x/../../../.ota/audit.log",
    "/metadata/.%2e/.ota/config.json",
    "/metadata/..;/.ota/config.json",
    "/metadata/%u002e%u002e/.ota/config.json",
    "/targets/firmware/model-x/%2e%2e/%2e%2e/%2e%2e/.ota/audit.log",
    "/metadata/1.root.json/../../.ota/config.json",
    "/targets/firmware/model-x/link-out.bin",
    "/targets/firmware/model-x/link-dir/config.json",
    "/metadata/1.%2e%2e%2f%2e%2e%2f.ota%2fconfig.json",
    "/targets/%2Fetc%2Fpasswd",
    "/targets/firmware/model-x/x.bin%20",
    "https://127.0.0.1/metadata/../.ota/config.json",
    "https://127.0.0.1/.ota/config.json",
]
# well-formed paths that name nothing servable: 404; everything else is malformed: 400
NOT_FOUND = {
    "//etc/passwd",
    "/targets/firmware/model-x/link-out.bin",
    "/targets/firmware/model-x/link-dir/config.json",
}
SECRETS = (b"signers", b"encfile", b"PRIVATE KEY", b"root:x:0:0", b"token_sha256", b'"prev"')


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GunicornServer, str, TlsFiles, DelegatedRepo]]:
    tmp = tmp_path_factory.mktemp("trav")
    tls = make_tls(tmp / "tls")
    repo = make_delegated_repo(tmp / "repo")
    token = add_device(RepoPaths(repo.root), "dev-x1", "model-x")
    model_dir = repo.root / "targets" / "firmware" / "model-x"
    model_dir.mkdir(parents=True)
    os.symlink(repo.root / ".ota" / "config.json", model_dir / "link-out.bin")
    os.symlink(repo.root / ".ota", model_dir / "link-dir")
    with run_gunicorn(
        repo.root, cert=tls.server_cert, key=tls.server_key, ca_cert=tls.ca_cert
    ) as server:
        yield server, token, tls, repo


def raw_get(server: GunicornServer, tls: TlsFiles, target: str, token: str) -> tuple[int, bytes]:
    """Send `GET <target>` exactly as written; return the status and the whole response."""
    host, port = server.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    with (
        socket.create_connection((host, int(port)), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock,
    ):
        request = (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n"
        )
        tls_sock.sendall(request.encode("latin-1"))
        data = b""
        for _ in range(10_000):  # bounded: the server closes after one response
            chunk = tls_sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_at_least_twenty_forms(served: tuple[GunicornServer, str, TlsFiles, DelegatedRepo]) -> None:
    assert len(set(TRAVERSALS)) >= 20


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_refused_and_leaks_nothing(
    served: tuple[GunicornServer, str, TlsFiles, DelegatedRepo], target: str
) -> None:
    server, token, tls, _ = served
    status, response = raw_get(server, tls, target, token)
    assert status == (404 if target in NOT_FOUND else 400), response[:200]
    for secret in SECRETS:
        assert secret not in response


def test_the_control_request_works_and_attempts_are_flagged(
    served: tuple[GunicornServer, str, TlsFiles, DelegatedRepo],
) -> None:
    server, token, tls, repo = served
    status, response = raw_get(server, tls, "/metadata/timestamp.json", token)
    assert status == 200
    assert response.endswith((repo.root / "metadata" / "timestamp.json").read_bytes())
    absolute, _ = raw_get(server, tls, "https://127.0.0.1/metadata/timestamp.json", token)
    assert absolute == 200  # RFC 9112 absolute-form is served like origin-form
    raw_get(server, tls, "/metadata/%2e%2e/.ota/config.json", token)
    entries = [
        json.loads(line)
        for line in (repo.root / ".ota" / "server-audit.log").read_text().splitlines()
    ]
    flagged = [e for e in entries if e.get("flag") == "bad-path"]
    assert any("%2e%2e" in e["path"] for e in flagged)


def test_unchanged_after_all_attempts(
    served: tuple[GunicornServer, str, TlsFiles, DelegatedRepo], tmp_path: Path
) -> None:
    server, token, tls, repo = served
    config = (repo.root / ".ota" / "config.json").read_bytes()
    for target in TRAVERSALS:
        raw_get(server, tls, target, token)
    assert (repo.root / ".ota" / "config.json").read_bytes() == config
