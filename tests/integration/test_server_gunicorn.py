"""The update server under real gunicorn over TLS on 127.0.0.1, driven by a real ngclient
Updater, by `requests`, by the publisher's `upload_role` and by `ota-repo` subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface, Updater

from repository.publisher.upload import UploadError, upload_role
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import BIN, run_gunicorn
from tests.helpers.repo import cli_env, ota_repo, published
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

FW1 = "firmware/model-x/fw-1.0.0.bin"
FW1_BYTES = os.urandom(300_000)


class BearerFetcher(FetcherInterface):
    """Moves bytes for ngclient over HTTPS with a device token and/or client certificate."""

    def __init__(
        self, ca: Path, token: str | None = None, cert: tuple[Path, Path] | None = None
    ) -> None:
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
        self.session.verify = str(ca)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if cert:
            self.session.cert = (str(cert[0]), str(cert[1]))

    def _fetch(self, url: str) -> Iterator[bytes]:
        r = self.session.get(url, stream=True, timeout=30)
        if r.status_code != 200:
            r.close()
            raise DownloadHTTPError(f"GET {url}: {r.status_code}", r.status_code)
        return r.iter_content(64 * 1024)


def _updater(url: str, repo: DelegatedRepo, cache: Path, fetcher: FetcherInterface) -> Updater:
    (cache / "metadata").mkdir(parents=True, exist_ok=True)
    (cache / "targets").mkdir(parents=True, exist_ok=True)
    return Updater(
        str(cache / "metadata"),
        f"{url}/metadata/",
        str(cache / "targets"),
        f"{url}/targets/",
        fetcher=fetcher,
        bootstrap=repo.trusted_root,
    )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"), client_cn="dev-x1")


@pytest.fixture
def repo(tmp_path: Path) -> DelegatedRepo:
    return make_delegated_repo(tmp_path / "repo", ("model-x", "model-y"))


def _device(repo: DelegatedRepo, device_id: str, hwid: str) -> str:
    out = ota_repo(repo.root, "device", "add", device_id, "--hwid", hwid)
    return out.stdout.strip()


def test_publish_then_a_device_updates_with_ngclient(
    repo: DelegatedRepo, tls: TlsFiles, tmp_path: Path
) -> None:
    token_x = _device(repo, "dev-x1", "model-x")
    token_y = _device(repo, "dev-y1", "model-y")
    listed = ota_repo(repo.root, "device", "list", "--json")
    assert {d["device_id"] for d in json.loads(listed.stdout)} == {"dev-x1", "dev-y1"}
    assert token_x not in listed.stdout
    metadata, files = publisher_update(repo, "model-x", {FW1: FW1_BYTES}, tmp=tmp_path / "pub")
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        workers=2,
        config={"upload_tokens": False},
    ) as server:
        answer = upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
        assert answer == {"role": "model-x", "version": 1, "targets": [FW1]}

        updater = _updater(server.url, repo, tmp_path / "dx", BearerFetcher(tls.ca_cert, token_x))
        updater.refresh()
        info = updater.get_targetinfo(FW1)
        assert info is not None
        local = updater.download_target(info, str(tmp_path / "fw.bin"))
        assert Path(local).read_bytes() == FW1_BYTES

        # model-y's device sees the metadata but may not download model-x's firmware
        updater_y = _updater(server.url, repo, tmp_path / "dy", BearerFetcher(tls.ca_cert, token_y))
        updater_y.refresh()
        info_y = updater_y.get_targetinfo(FW1)
        assert info_y is not None
        with pytest.raises(DownloadHTTPError) as refused:
            updater_y.download_target(info_y, str(tmp_path / "fw-y.bin"))
        assert refused.value.status_code == 403

        # no token: nothing at all
        with pytest.raises(DownloadHTTPError):
            _updater(server.url, repo, tmp_path / "dn", BearerFetcher(tls.ca_cert)).refresh()

        report = {
            "device_id": "dev-x1",
            "installed_version": "1.0.0",
            "slot": "b",
            "result": "success",
            "reason": "",
            "event": "committed",
        }
        r = requests.post(
            f"{server.url}/api/v1/reports",
            json=report,
            verify=str(tls.ca_cert),
            headers={"Authorization": f"Bearer {token_x}"},
            timeout=10,
        )
        assert r.status_code == 201
    entries = [
        json.loads(x) for x in (repo.root / ".ota" / "server-audit.log").read_text().splitlines()
    ]
    assert any(e["event"] == "upload" and e["role"] == "model-x" for e in entries)
    assert any(e.get("flag") == "other-model-firmware" and e["device"] == "dev-y1" for e in entries)
    assert any(e["event"] == "report" and e["device"] == "dev-x1" for e in entries)
    downloads = [
        e
        for e in entries
        if e["event"] == "download" and e["device"] == "dev-x1" and e["path"].startswith("targets/")
    ]
    assert downloads and downloads[-1]["bytes"] == len(FW1_BYTES)


def test_http_caching_and_ranges_through_gunicorn(
    repo: DelegatedRepo, tls: TlsFiles, tmp_path: Path
) -> None:
    metadata, files = publisher_update(repo, "model-x", {FW1: FW1_BYTES}, tmp=tmp_path / "pub")
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"device_auth": False, "upload_tokens": False},
    ) as server:
        upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
        sha = hashlib.sha256(FW1_BYTES).hexdigest()
        url = f"{server.url}/targets/firmware/model-x/{sha}.fw-1.0.0.bin"
        s = requests.Session()
        s.trust_env = False
        s.verify = str(tls.ca_cert)
        full = s.get(url, timeout=10)
        assert full.status_code == 200 and full.content == FW1_BYTES
        assert full.headers["ETag"] == f'"{sha}"'
        assert "immutable" in full.headers["Cache-Control"]
        part = s.get(url, headers={"Range": "bytes=1000-"}, timeout=10)
        assert part.status_code == 206 and part.content == FW1_BYTES[1000:]
        assert part.headers["Content-Range"] == f"bytes 1000-{len(FW1_BYTES) - 1}/{len(FW1_BYTES)}"
        assert s.get(url, headers={"If-None-Match": f'"{sha}"'}, timeout=10).status_code == 304
        head = s.head(url, timeout=10)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(FW1_BYTES))
        ts = s.get(f"{server.url}/metadata/timestamp.json", timeout=10)
        assert ts.content == (repo.root / "metadata" / "timestamp.json").read_bytes()
        assert "no-cache" in ts.headers["Cache-Control"]
        assert s.get(f"{server.url}/metadata/2.root.json", timeout=10).status_code == 404
        assert s.get(f"{server.url}/healthz", timeout=10).json()["status"] == "ok"


def test_mutual_tls_identifies_the_device_by_certificate(
    repo: DelegatedRepo, tls: TlsFiles, tmp_path: Path
) -> None:
    _device(repo, "dev-x1", "model-x")  # the client certificate's CN
    client = (tls.client_cert, tls.client_key)
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        device_ca=tls.ca_cert,
        health_client_cert=client,
    ) as server:
        updater = _updater(
            server.url, repo, tmp_path / "c", BearerFetcher(tls.ca_cert, cert=client)
        )
        updater.refresh()  # no token: the certificate is the identity
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(
                f"{server.url}/metadata/timestamp.json", verify=str(tls.ca_cert), timeout=10
            )
    other = make_tls(tmp_path / "other-ca", client_cn="dev-x1")
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        device_ca=tls.ca_cert,
        mtls="optional",
    ) as server:
        # a certificate from another CA is refused by TLS itself
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(
                f"{server.url}/metadata/timestamp.json",
                verify=str(tls.ca_cert),
                cert=(str(other.client_cert), str(other.client_key)),
                timeout=10,
            )
        # a certificate from the device CA for a device that is not registered: 401
        stranger = _client_cert(tls, "stranger", tmp_path)
        r = requests.get(
            f"{server.url}/metadata/timestamp.json",
            verify=str(tls.ca_cert),
            cert=stranger,
            timeout=10,
        )
        assert r.status_code == 401
        # a token for one device with the certificate of another: 401
        token_y = _device(repo, "dev-y1", "model-y")
        r = requests.get(
            f"{server.url}/metadata/timestamp.json",
            verify=str(tls.ca_cert),
            timeout=10,
            cert=(str(tls.client_cert), str(tls.client_key)),
            headers={"Authorization": f"Bearer {token_y}"},
        )
        assert r.status_code == 401
        r = requests.get(
            f"{server.url}/metadata/timestamp.json", verify=str(tls.ca_cert), timeout=10
        )
        assert r.status_code == 401  # optional mTLS: no certificate and no token


def _client_cert(tls: TlsFiles, common_name: str, folder: Path) -> tuple[str, str]:
    """Another client certificate from the same device CA."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{common_name}.pem", folder / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_upload_role_reports_refusals_and_nothing_changes(
    repo: DelegatedRepo, tls: TlsFiles, tmp_path: Path
) -> None:
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"max_upload_bytes": 200_000, "upload_tokens": False},
    ) as server:
        before = published(repo.root)
        wrong = publisher_update(
            repo, "model-x", {FW1: b"small"}, signers=repo.signers["model-y"], tmp=tmp_path / "w"
        )
        with pytest.raises(UploadError, match=r"\(403\).*not signed by enough") as e:
            upload_role(server.url, "model-x", *wrong, ca_bundle=tls.ca_cert)
        assert e.value.status == 403
        big = publisher_update(repo, "model-x", {FW1: FW1_BYTES}, tmp=tmp_path / "b")
        with pytest.raises(UploadError) as e:
            upload_role(server.url, "model-x", *big, ca_bundle=tls.ca_cert)
        assert e.value.status in (413, 0)  # 0: the server closed while the body was sent
        with pytest.raises(UploadError, match="TLS verification"):
            upload_role(server.url, "model-x", *wrong)  # the system CAs do not know this one
        assert published(repo.root) == before


def test_ota_repo_serve_on_port_0_prints_its_url(repo: DelegatedRepo) -> None:
    proc = subprocess.Popen(
        [str(BIN / "ota-repo"), "--repo", str(repo.root), "serve", "--port", "0"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving ") and " at http://127.0.0.1:" in line
        url = line.split(" at ", 1)[1].strip().rstrip("/")
        r = requests.get(f"{url}/metadata/timestamp.json", timeout=10)
        assert r.status_code == 200  # device authentication is off for development
        assert r.content == (repo.root / "metadata" / "timestamp.json").read_bytes()
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=15)


def test_gunicorn_config_refuses_to_start_without_a_certificate(repo: DelegatedRepo) -> None:
    env: dict[str, Any] = {k: v for k, v in cli_env().items() if not k.startswith("OTA_TLS")}
    env["OTA_REPO"] = str(repo.root)
    proc = subprocess.run(
        [
            str(BIN / "gunicorn"),
            "-c",
            "python:repository.server.gunicorn_conf",
            "repository.server:create_app()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "set OTA_TLS_CERT and OTA_TLS_KEY" in proc.stderr


def test_ota_publish_uploads_through_the_server_with_an_upload_token(
    tls: TlsFiles, tmp_path: Path
) -> None:
    """The publisher's own command line against the real server, tokens on, device auth on."""
    from datetime import UTC, datetime, timedelta

    from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Targets

    from repository.create import init_dev
    from repository.keys import generate_key, load_signer
    from tests.helpers.repo import PASSPHRASE

    os.environ.setdefault("OTA_KEY_PASSPHRASE", PASSPHRASE)
    repo = init_dev(tmp_path / "repo")
    priv, _, key = generate_key(tmp_path / "publisher", "model-x", passphrase=PASSPHRASE)
    with repo.writing("delegate"):
        with repo.edit_targets() as targets:
            role = DelegatedRole("model-x", [], 1, True, paths=["firmware/model-x/*"])
            targets.delegations = Delegations(keys={}, roles={"model-x": role})
            targets.add_key(key, "model-x")
        repo.publish_snapshot_and_timestamp()
    token = ota_repo(repo.paths.root, "upload-token", "add", "ci-x", "--role", "model-x")
    token_file = tmp_path / "token"
    token_file.write_text(token.stdout.strip())
    token_file.chmod(0o600)
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(os.urandom(50_000))
    with run_gunicorn(
        repo.paths.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"upload_tokens": True},
    ) as server:
        # ngclient needs a delegated role listed in snapshot: its first version comes first
        first = Metadata(Targets(expires=datetime.now(UTC) + timedelta(days=30)))
        first.sign(load_signer(f"encfile:{priv}", key))
        upload_role(
            server.url,
            "model-x",
            first.to_bytes(),
            {},
            token=token_file.read_text(),
            ca_bundle=tls.ca_cert,
        )
        proc = subprocess.run(
            [
                str(BIN / "ota-publish"),
                "add",
                str(firmware),
                "--hwid",
                "model-x",
                "--version",
                "1.0.0",
                "--role",
                "model-x",
                "--key",
                f"encfile:{priv}",
                "--server",
                server.url,
                "--root",
                str(repo.paths.metadata / "1.root.json"),
                "--token-file",
                str(token_file),
                "--ca-bundle",
                str(tls.ca_cert),
            ],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "model-x v2" in proc.stdout
    last = json.loads((repo.paths.audit).read_text().splitlines()[-1])
    assert last["action"] == "upload" and last["publisher"] == "ci-x"


def test_repeated_auth_failures_are_throttled_across_workers(
    repo: DelegatedRepo, tls: TlsFiles
) -> None:
    token = _device(repo, "dev-x1", "model-x")
    config = {"throttle_failures": 5, "throttle_window": 60, "throttle_block": 30}
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        workers=2,
        config=config,
    ) as server:
        url = f"{server.url}/metadata/timestamp.json"
        statuses = []
        for i in range(8):  # a new connection each time: the requests spread over both workers
            r = requests.get(
                url,
                verify=str(tls.ca_cert),
                timeout=10,
                headers={"Authorization": f"Bearer otad_guess{i}", "Connection": "close"},
            )
            statuses.append(r.status_code)
        assert statuses == [401] * 5 + [429] * 3
        blocked = requests.get(
            url, verify=str(tls.ca_cert), timeout=10, headers={"Authorization": f"Bearer {token}"}
        )
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    entries = [
        json.loads(x) for x in (repo.root / ".ota" / "server-audit.log").read_text().splitlines()
    ]
    assert [e["event"] for e in entries].count("auth-failure") == 5
    assert sum(e.get("flag") == "auth-failure-burst" for e in entries) == 1
    assert not any("otad_guess" in json.dumps(e) for e in entries)
