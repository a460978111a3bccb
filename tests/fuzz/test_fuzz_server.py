"""Fuzzing the update server: random paths, methods, headers and bodies against every route, and
random multipart uploads against the publisher API.

Each request must get an answer below 500 that never carries a byte of anything outside the
published folders (sentinel files next to, above and inside the private folder, symlinks
pointing out of the tree, the keys and the config), and no request may change a file outside
the server's own logs: the published repository, the private folder and the folders around it
stay byte-for-byte the same (no upload here is validly signed, so none may publish).

Flask's test client drives the app for speed; one test sends hypothesis-generated raw request
lines to the real server under gunicorn over TLS.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from repository.devices import add_device
from repository.layout import RepoPaths
from repository.server import create_app
from tests.helpers.certs import make_tls
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.repo import PASSPHRASE
from tests.helpers.server_repo import make_delegated_repo, publisher_update

SENTINEL = b"SENTINEL-never-served-5d1c9e"
FW = b"\x7fELF model-x 1.0.0 " * 400
FW_Y = b"\x7fELF model-y 1.0.0 " * 400
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# The server's own bookkeeping in its private folder: append-only logs, throttle state.
LOGS = ("server-audit.log", "audit.log", "server-throttle")
# explicit examples: the fuzzer certainly reaches real files, not only refusals
REACHABLE = (
    "/metadata/timestamp.json",
    "/metadata/1.root.json",
    "/targets/firmware/model-x/{SHA}.fw-1.0.0.bin",
)


@dataclass
class Served:
    folder: Path
    root: Path
    token: str
    sha: str
    sha_y: str
    apps: dict[str, Flask]

    def tree(self) -> dict[str, str]:
        """Every file around and below the repository except the server's own bookkeeping."""
        out = {}
        for path in sorted(self.folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.name not in LOGS:
                out[str(path.relative_to(self.folder))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("server-fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
        repo = make_delegated_repo(folder / "repo", ("model-x", "model-y"))
        setup = create_app({"repo": str(repo.root), "device_auth": False, "upload_tokens": False})
        for hwid, data in (("model-x", FW), ("model-y", FW_Y)):
            path = f"firmware/{hwid}/fw-1.0.0.bin"
            metadata, _files = publisher_update(
                repo, hwid, {path: data}, tmp=folder / "publisher" / hwid
            )
            answer = setup.test_client().post(
                "/api/v1/publish",
                content_type="multipart/form-data",
                data={
                    "role": hwid,
                    "metadata": (io.BytesIO(metadata), "m.json"),
                    "target": [(io.BytesIO(data), path)],
                },
            )
            assert answer.status_code == 201, answer.json
        token = add_device(RepoPaths(repo.root), "dev-x1", "model-x")
        root = repo.root
        for secret in (
            folder / "outside.txt",
            root / "secret.txt",
            root / ".ota" / "secret.txt",
            root / "metadata" / ".hidden.json",
        ):
            secret.write_bytes(SENTINEL)
        (root / "targets" / "firmware" / "model-x" / "link-out.bin").symlink_to(
            folder / "outside.txt"
        )
        (root / "metadata" / "9.link.json").symlink_to(root / ".ota" / "config.json")
        (root / "targets" / "firmware" / "link-dir").symlink_to(root / ".ota")
        common = {
            "repo": str(root),
            "registry_reload_interval": 0,
            "throttle_failures": 10**6,
            "upload_tokens": False,
        }
        apps = {
            "auth": create_app({**common, "device_auth": True}),
            "open": create_app({**common, "device_auth": False}),
        }
        yield Served(
            folder,
            root,
            token,
            hashlib.sha256(FW).hexdigest(),
            hashlib.sha256(FW_Y).hexdigest(),
            apps,
        )


def assert_harmless(status: int, body: bytes, where: str) -> None:
    assert status < 500, f"{where}: HTTP {status}: {body[:200]!r}"
    for secret in (SENTINEL, b"PRIVATE KEY", b'"signers"', b"token_sha256"):
        assert secret not in body, f"{where}: leaked {secret!r}"


# -- strategies --------------------------------------------------------------------------------

SEGMENTS = [
    "metadata",
    "targets",
    "firmware",
    "model-x",
    "model-y",
    "api",
    "v1",
    "publish",
    "reports",
    "healthz",
    "timestamp.json",
    "1.root.json",
    "2.root.json",
    "1.targets.json",
    "2.model-x.json",
    "1.snapshot.json",
    "9.link.json",
    ".hidden.json",
    "link-out.bin",
    "link-dir",
    "config.json",
    "secret.txt",
    ".ota",
    "keys",
    "root.key",
    "audit.log",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2E%2e",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "%00",
    "%252e%252e",
    "..%2f",
    "%c0%af",
    "%ff",
    "~",
    "fw-1.0.0.bin",
    "é",
    "a" * 300,
    "{SHA}.fw-1.0.0.bin",
    "%7bSHA%7d.fw-1.0.0.bin",
    "{SHA_Y}.fw-1.0.0.bin",
    "..;",
    "%u002e",
    " ",
    "?x=1",
    "#frag",
]
segments = st.one_of(
    st.sampled_from(SEGMENTS), st.text(alphabet="abcXYZ019.-_%/\\:;~", max_size=12)
)
paths = st.lists(segments, max_size=7).map(lambda parts: "/" + "/".join(parts))
methods = st.sampled_from(
    ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]
)
header_values = st.one_of(
    st.sampled_from(
        [
            "bytes=0-",
            "bytes=5-10",
            "bytes=-5",
            "bytes=999999999-",
            "bytes=10-5",
            "bytes=0-1,2-3",
            "bytes=abc",
            "items=0-1",
            "",
            "*",
            'W/"x"',
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "not a date",
            "Bearer ",
            "Bearer x",
            "Basic Zm9vOmJhcg==",
            "{TOKEN}",
            "Bearer {TOKEN}",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "Range",
            "Authorization",
            "If-None-Match",
            "If-Modified-Since",
            "If-Range",
            "Content-Type",
            "Accept-Encoding",
            "X-Forwarded-For",
        ]
    ),
    header_values,
    max_size=4,
)


def fill(text: str, served: Served) -> str:
    return (
        text.replace("{SHA}", served.sha)
        .replace("{SHA_Y}", served.sha_y)
        .replace("{TOKEN}", served.token)
    )


@FUZZ
@given(
    app=st.sampled_from(["auth", "open"]),
    method=methods,
    path=paths,
    head=headers,
    body=st.binary(max_size=300),
)
@example(app="open", method="GET", path=REACHABLE[0], head={}, body=b"")
@example(app="open", method="GET", path=REACHABLE[1], head={"Range": "bytes=5-"}, body=b"")
@example(app="open", method="GET", path=REACHABLE[2], head={"Range": "bytes=10-20"}, body=b"")
@example(
    app="auth", method="GET", path=REACHABLE[2], head={"Authorization": "Bearer {TOKEN}"}, body=b""
)
@example(
    app="auth",
    method="GET",
    path="/targets/firmware/model-y/{SHA_Y}.fw-1.0.0.bin",
    head={"Authorization": "Bearer {TOKEN}"},
    body=b"",
)
@example(app="open", method="GET", path="/targets/firmware/model-x/link-out.bin", head={}, body=b"")
@example(app="open", method="GET", path="/metadata/9.link.json", head={}, body=b"")
def test_fuzz_routes(
    served: Served, app: str, method: str, path: str, head: dict[str, str], body: bytes
) -> None:
    reachable = path in REACHABLE
    path = fill(path, served)
    head = {k: fill(v, served) for k, v in head.items()}
    before = served.tree()
    client = served.apps[app].test_client()
    try:
        response = client.open(path, method=method, headers=head, data=body)
    except (ValueError, UnicodeError):
        return  # werkzeug's test client cannot even build this request: nothing reached the app
    assert_harmless(response.status_code, response.get_data(), f"{method} {path} {head}")
    if reachable and app == "open" and method == "GET":
        assert response.status_code in (200, 206), (path, response.status_code)
    if response.status_code in (200, 206) and path.startswith("/targets/") and method == "GET":
        body = response.get_data()
        assert FW.find(body) >= 0 or FW_Y.find(body) >= 0  # only published firmware bytes
        if app == "auth":  # the model-x device's token: never model-y's firmware
            assert FW_Y.find(body) < 0 or FW.find(body) >= 0, f"model-y firmware for {path}"
    assert served.tree() == before


# -- upload API --------------------------------------------------------------------------------

roles = st.sampled_from(
    [
        "model-x",
        "model-y",
        "targets",
        "root",
        "snapshot",
        "timestamp",
        "../model-x",
        "model-x/../root",
        "",
        "x" * 200,
    ]
)
target_names = st.one_of(
    st.sampled_from(
        [
            "firmware/model-x/fw-2.0.0.bin",
            "firmware/model-y/fw-2.0.0.bin",
            "../../.ota/config.json",
            "/etc/passwd",
            "firmware/model-x/../../x.bin",
            "firmware/model-x/..%2f..%2fx.bin",
            "firmware\\model-x\\fw.bin",
            "firmware/model-x/link-out.bin",
            "",
            ".ota/keys/root.key",
        ]
    ),
    st.text(max_size=30),
)


@st.composite
def upload_metadata(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "signed-mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    doc: dict[str, Any] = {
        "signed": {
            "_type": draw(st.sampled_from(["targets", "root", "snapshot", "x"])),
            "version": draw(st.integers(-2, 2**40)),
            "spec_version": "1.0.31",
            "expires": draw(st.sampled_from(["2099-01-01T00:00:00Z", "yesterday", ""])),
            "targets": {
                draw(target_names): {
                    "length": draw(st.integers(-1, 10**6)),
                    "hashes": {"sha256": "00" * 32},
                }
            },
        },
        "signatures": draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "keyid": st.text(alphabet="0123456789abcdef", max_size=64),
                        "sig": st.text(alphabet="0123456789abcdef", max_size=128),
                    }
                ),
                max_size=3,
            )
        ),
    }
    if kind == "json":
        return json.dumps(doc).encode()
    # a structurally valid role file with one byte changed after signing
    data = bytearray(json.dumps(doc).encode())
    data[draw(st.integers(0, len(data) - 1))] ^= 1
    return bytes(data)


@FUZZ
@given(
    app=st.sampled_from(["auth", "open"]),
    role=roles,
    metadata=upload_metadata(),
    parts=st.lists(st.tuples(target_names, st.binary(max_size=200)), max_size=3),
    content_type=st.sampled_from(["multipart/form-data", "application/json", "text/plain"]),
)
def test_fuzz_upload_api(
    served: Served,
    app: str,
    role: str,
    metadata: bytes,
    parts: list[tuple[str, bytes]],
    content_type: str,
) -> None:
    before = served.tree()
    data: dict[str, Any] = {
        "role": role,
        "metadata": (io.BytesIO(metadata), "metadata.json"),
        "target": [(io.BytesIO(b), n) for n, b in parts],
    }
    client = served.apps[app].test_client()
    if content_type == "multipart/form-data":
        response = client.post("/api/v1/publish", data=data, content_type=content_type)
    else:
        response = client.post("/api/v1/publish", data=metadata, content_type=content_type)
    assert_harmless(response.status_code, response.get_data(), f"upload {role} {parts}")
    assert response.status_code != 201, response.get_data()
    assert served.tree() == before
    staging = served.root / ".ota" / "staging"
    assert not any(p.is_file() for p in staging.rglob("*")), "upload left files in staging"


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(
                ["device_id", "installed_version", "slot", "result", "reason", "event", "x"]
            ),
            st.one_of(st.text(max_size=600), st.integers(), st.none(), st.lists(st.integers())),
            max_size=6,
        ).map(lambda d: json.dumps(d).encode()),
    ),
    auth=st.sampled_from(["token", "none", "wrong"]),
)
def test_fuzz_reports(served: Served, body: bytes, auth: str) -> None:
    head = {
        "token": {"Authorization": f"Bearer {served.token}"},
        "none": {},
        "wrong": {"Authorization": "Bearer nope"},
    }[auth]
    before = served.tree()
    response = (
        served.apps["auth"]
        .test_client()
        .post("/api/v1/reports", data=body, headers=head, content_type="application/json")
    )
    assert_harmless(response.status_code, response.get_data(), f"report {body[:80]!r}")
    if auth != "token":
        assert response.status_code in (401, 403, 429)
    assert served.tree() == before


# -- the real server -----------------------------------------------------------------------------


def raw_request(
    host: str, port: int, ca: Path, method: str, path: str, head: dict[str, str]
) -> tuple[int, bytes]:
    """One request written by hand on a TLS socket (no client library normalises the path)."""
    context = ssl.create_default_context(cafile=str(ca))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        tls.sendall(raw)
        chunks = []
        while True:
            data = tls.recv(65536)
            if not data:
                break
            chunks.append(data)
    response = b"".join(chunks)
    status_line = response.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return status, response


def test_fuzz_routes_on_gunicorn(served: Served, tmp_path: Path) -> None:
    """A bounded sample of the same generated requests against gunicorn over TLS."""
    tls = make_tls(tmp_path / "tls")
    before = served.tree()
    safe_path = paths.map(lambda p: p.replace(" ", "%20").replace("#", "%23"))
    with run_gunicorn(
        served.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"throttle_failures": 10**6},
        log_dir=tmp_path,
    ) as server:
        port = int(server.url.rsplit(":", 1)[1])

        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(method=methods, path=safe_path, head=headers)
        def one(method: str, path: str, head: dict[str, str]) -> None:
            path = fill(path, served)
            head = {k: fill(v, served) for k, v in head.items() if "\r" not in v and "\n" not in v}
            status, response = raw_request("127.0.0.1", port, tls.ca_cert, method, path, head)
            assert status != 0, f"{method} {path}: no HTTP answer: {response[:200]!r}"
            assert_harmless(status, response, f"gunicorn {method} {path}")

        one()
        assert served.tree() == before
        assert "Traceback" not in server.log_text()
    assert os.path.exists(served.root / "metadata" / "timestamp.json")
