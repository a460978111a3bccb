"""The update server under real gunicorn over TLS against hostile requests: unauthenticated
slow upload bodies, malformed chunked bodies, deeply nested JSON, oversized chunked reports,
redirects built from the Host header, and retried reports.

Raw requests go over `ssl` sockets so the bytes on the wire are exactly the attacker's.
"""

from __future__ import annotations

import io
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from repository.devices import add_device, add_uploader
from repository.layout import RepoPaths
from repository.server.requestlog import read_request_log, request_log_path
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import GunicornServer, run_gunicorn
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

FW = "firmware/model-x/fw-1.0.0.bin"
REPORT_ID = "0123456789abcdef0123456789abcdef"


@dataclass
class Site:
    repo: DelegatedRepo
    tls: TlsFiles
    device_token: str
    upload_token: str
    tmp: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    tmp = tmp_path_factory.mktemp("hardening")
    repo = make_delegated_repo(tmp / "repo", ("model-x",))
    paths = RepoPaths(repo.root)
    return Site(
        repo,
        make_tls(tmp / "tls"),
        add_device(paths, "dev-x1", "model-x"),
        add_uploader(paths, "ci-x", ["model-x"]),
        tmp,
    )


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[GunicornServer]:
    """The shipped defaults: device authentication and upload tokens on."""
    with run_gunicorn(
        site.repo.root,
        cert=site.tls.server_cert,
        key=site.tls.server_key,
        ca_cert=site.tls.ca_cert,
        threads=12,
    ) as running:
        yield running


def _connect(server: GunicornServer, ca: Path, timeout: float = 20) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    port = int(server.url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (Content-Length framed, as the server always answers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:length]


def _exchange(
    server: GunicornServer, ca: Path, request: bytes
) -> tuple[int, dict[str, str], bytes]:
    with _connect(server, ca) as sock:
        sock.sendall(request)
        return _read_response(sock)


def _chunked_post(
    path: str, headers: dict[str, str], body: bytes, host: str = "127.0.0.1"
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    assert status == expected, (status, body)
    assert headers.get("content-type") == "application/json", headers
    assert "location" not in headers
    message: str = json.loads(body)["error"]
    assert message and "\n" not in message
    return message


@pytest.fixture
def log_mark(server: GunicornServer) -> Iterator[None]:
    """The server's error log gets no traceback: only one-line entries."""
    before = len(server.log_text())
    yield
    added = server.log_text()[before:]
    assert "Traceback" not in added, added
    assert all(line.startswith("[") for line in added.splitlines()), added


def _device_headers(site: Site) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.device_token}", "Content-Type": "application/json"}


def _report(site: Site, **extra: object) -> dict[str, object]:
    return {"device_id": "dev-x1", "installed_version": "1.0.0", "result": "ok", **extra}


def _reports_in_log(site: Site, report_id: str) -> list[dict[str, object]]:
    log = request_log_path(RepoPaths(site.repo.root).private)
    return [
        e
        for e in read_request_log(log)
        if e["event"] == "report" and e.get("report_id") == report_id
    ]


# -- unauthenticated uploads ------------------------------------------------------------------


def test_slow_anonymous_upload_bodies_get_401_and_cannot_lock_publishers_out(
    site: Site, server: GunicornServer, log_mark: None
) -> None:
    attackers = []
    try:
        for _ in range(6):
            sock = _connect(server, site.tls.ca_cert)
            head = _chunked_post(
                "/api/v1/publish", {"Content-Type": "multipart/form-data; boundary=x"}, b"1\r\n-"
            )
            sock.sendall(head)  # and never the rest of the body
            attackers.append(sock)
        for sock in attackers:  # each is answered without its body being read
            status, headers, body = _read_response(sock)
            assert _assert_json_error(status, headers, body, 401) == "unauthorized"
        metadata, files = publisher_update(site.repo, "model-x", {FW: b"fw" * 5000}, tmp=site.tmp)
        answer = requests.post(
            f"{server.url}/api/v1/publish",
            headers={"Authorization": f"Bearer {site.upload_token}"},
            data={"role": "model-x"},
            files=[
                ("metadata", ("metadata.json", io.BytesIO(metadata))),
                ("target", (FW, files[FW].read_bytes())),
            ],
            verify=str(site.tls.ca_cert),
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
    finally:
        for sock in attackers:
            sock.close()


# -- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunk", [b"zz\r\n", b"5;\x01bad\r\nhello\r\n0\r\n\r\n"], ids=["size", "ext"]
)
@pytest.mark.parametrize("path", ["/api/v1/publish", "/api/v1/reports"])
def test_malformed_chunked_body_gets_400_json_and_no_traceback(
    site: Site, server: GunicornServer, log_mark: None, path: str, chunk: bytes
) -> None:
    if path == "/api/v1/publish":
        headers = {
            "Authorization": f"Bearer {site.upload_token}",
            "Content-Type": "multipart/form-data; boundary=x",
        }
    else:
        headers = _device_headers(site)
    status, head, body = _exchange(server, site.tls.ca_cert, _chunked_post(path, headers, chunk))
    _assert_json_error(status, head, body, 400)


def test_deeply_nested_report_gets_400_not_a_recursion_error(
    site: Site, server: GunicornServer, log_mark: None
) -> None:
    nested = b"[" * 8000
    answer = requests.post(
        f"{server.url}/api/v1/reports",
        data=nested,
        headers=_device_headers(site),
        verify=str(site.tls.ca_cert),
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "report is not a JSON object"}


def test_chunked_report_over_the_size_limit_gets_413(
    site: Site, server: GunicornServer, log_mark: None
) -> None:
    big = json.dumps(_report(site, reason="x" * 40_000)).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(big[i : i + 4096]), big[i : i + 4096])
        for i in range(0, len(big), 4096)
    )
    request = _chunked_post("/api/v1/reports", _device_headers(site), chunks + b"0\r\n\r\n")
    status, head, body = _exchange(server, site.tls.ca_cert, request)
    _assert_json_error(status, head, body, 413)


def test_double_slash_path_with_a_foreign_host_gets_404_json_not_a_redirect(
    site: Site, server: GunicornServer, log_mark: None
) -> None:
    report = json.dumps(_report(site)).encode()
    request = (
        b"POST /api/v1//reports HTTP/1.1\r\nHost: evil.example\r\n"
        b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (site.device_token.encode(), len(report), report)
    )
    status, head, body = _exchange(server, site.tls.ca_cert, request)
    _assert_json_error(status, head, body, 404)
    assert b"evil.example" not in body


# -- idempotent reports -----------------------------------------------------------------------


def _post_report(
    site: Site, server: GunicornServer, report: dict[str, object]
) -> requests.Response:
    return requests.post(
        f"{server.url}/api/v1/reports",
        json=report,
        headers={"Authorization": f"Bearer {site.device_token}"},
        verify=str(site.tls.ca_cert),
        timeout=30,
    )


def test_a_retried_report_is_stored_once_even_across_a_restart(
    site: Site, server: GunicornServer, log_mark: None
) -> None:
    report = _report(site, report_id=REPORT_ID)
    first = _post_report(site, server, report)
    assert first.status_code == 201, first.text
    again = _post_report(site, server, report)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert len(_reports_in_log(site, REPORT_ID)) == 1
    with run_gunicorn(
        site.repo.root,
        cert=site.tls.server_cert,
        key=site.tls.server_key,
        ca_cert=site.tls.ca_cert,
    ) as restarted:
        after = _post_report(site, restarted, report)
        assert (after.status_code, after.json()) == (first.status_code, first.json())
    assert len(_reports_in_log(site, REPORT_ID)) == 1
    other = _post_report(site, server, _report(site, report_id="f" * 32))
    assert other.status_code == 201
    assert len(_reports_in_log(site, "f" * 32)) == 1


@pytest.mark.parametrize(
    "report_id",
    ["0123456789ABCDEF0123456789ABCDEF", "abc", "g" * 32, "0" * 33, 12345, ["0" * 32]],
    ids=["upper-case", "short", "not-hex", "long", "number", "list"],
)
def test_a_malformed_report_id_gets_400(
    site: Site, server: GunicornServer, log_mark: None, report_id: object
) -> None:
    answer = _post_report(site, server, _report(site, report_id=report_id))
    assert answer.status_code == 400, answer.text
    assert "report_id" in answer.json()["error"]


def test_a_report_without_report_id_is_still_accepted(
    site: Site, server: GunicornServer, log_mark: None
) -> None:
    answer = _post_report(site, server, _report(site))
    assert answer.status_code == 201, answer.text
