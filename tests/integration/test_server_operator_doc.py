"""Every command in docs/operator.md, run for real: devices, upload tokens, gunicorn over TLS
(with and without mutual TLS), curl checks, the refresh, the audit, the dev server, and the
nginx front configuration in front of gunicorn."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.helpers.certs import make_tls
from tests.helpers.gunicorn import BIN
from tests.helpers.repo import PASSPHRASE, cli_env
from tests.helpers.server_repo import make_delegated_repo, publisher_update

DOC = Path(__file__).resolve().parents[2] / "docs" / "operator.md"
NGINX = Path("/usr/sbin/nginx")

DEVICE_ADD = "ota-repo --repo /srv/ota device add dev-0001 --hwid model-x > dev-0001.token"
DEVICE_LIST = "ota-repo --repo /srv/ota device list"
DEVICE_REMOVE = "ota-repo --repo /srv/ota device remove dev-0001"
TOKEN_ADD = "ota-repo --repo /srv/ota upload-token add ci-model-x --role model-x > ci-model-x.token"
TOKEN_LIST = "ota-repo --repo /srv/ota upload-token list"
HEALTH = "curl --fail --cacert /etc/ota/tls/ca.pem https://127.0.0.1:8443/healthz"
FETCH = (
    "curl --fail --cacert /etc/ota/tls/ca.pem -H @/etc/ota/dev-0001.header "
    "https://127.0.0.1:8443/metadata/timestamp.json"
)
REFRESH = "OTA_KEY_PASSPHRASE_FILE=/etc/ota/online-keys.passphrase ota-repo --repo /srv/ota refresh"
AUDIT_VERIFY = "ota-repo --repo /srv/ota audit verify"
GREP_FLAGS = "grep '\"flag\"' /srv/ota/.ota/server-audit.log"
SERVE = "ota-repo --repo /srv/ota serve --port 0"


def sh_commands(text: str) -> list[str]:
    """The commands of every ```sh block, continuation lines joined."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return commands


GUNICORN = [c for c in sh_commands(DOC.read_text()) if c.endswith("create_app()'")]
EXPECTED = {
    DEVICE_ADD,
    DEVICE_LIST,
    DEVICE_REMOVE,
    TOKEN_ADD,
    TOKEN_LIST,
    HEALTH,
    FETCH,
    REFRESH,
    AUDIT_VERIFY,
    GREP_FLAGS,
    SERVE,
    *GUNICORN,
}


def test_the_doc_has_no_command_this_test_does_not_run() -> None:
    assert set(sh_commands(DOC.read_text())) == EXPECTED
    assert len(GUNICORN) == 2


class Site:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = make_delegated_repo(tmp / "repo")
        self.tls = make_tls(tmp / "tls", client_cn="dev-0001")
        self.passphrase = tmp / "online-keys.passphrase"
        self.passphrase.write_text(PASSPHRASE)
        self.passphrase.chmod(0o600)
        self.header = tmp / "dev-0001.header"
        self.pidfile = tmp / "gunicorn.pid"
        self.port = _free_port()
        self.env = {k: v for k, v in cli_env().items() if k != "OTA_KEY_PASSPHRASE"}
        self.env["PATH"] = f"{BIN}:{self.env.get('PATH', '')}"

    def sub(self, command: str) -> str:
        for doc_path, real in (
            ("/srv/ota", self.repo.root),
            ("/etc/ota/tls/server.pem", self.tls.server_cert),
            ("/etc/ota/tls/server.key", self.tls.server_key),
            ("/etc/ota/tls/device-ca.pem", self.tls.ca_cert),
            ("/etc/ota/tls/ca.pem", self.tls.ca_cert),
            ("/etc/ota/online-keys.passphrase", self.passphrase),
            ("/etc/ota/dev-0001.header", self.header),
            ("/run/ota/gunicorn.pid", self.pidfile),
            ("127.0.0.1:8443", f"127.0.0.1:{self.port}"),
        ):
            command = command.replace(doc_path, str(real))
        return command

    def run(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert command in EXPECTED
        proc = subprocess.run(
            ["bash", "-c", self.sub(command)],
            cwd=self.tmp,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert proc.returncode == 0, f"{command}: {proc.stderr}"
        return proc

    def start(self, command: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / "gunicorn.log", "ab")
        proc = subprocess.Popen(
            ["bash", "-c", self.sub(command)],
            cwd=self.tmp,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        for _ in range(300):  # bounded: 30 s
            if self.run(HEALTH, check=False).returncode == 0:
                return proc
            assert proc.poll() is None, (self.tmp / "gunicorn.log").read_text()
            time.sleep(0.1)
        raise AssertionError("gunicorn did not become healthy")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        pid = int(self.pidfile.read_text())  # as the doc says: TERM the PID in OTA_PIDFILE
        assert pid in (proc.pid, *_children(proc.pid))  # one we started
        os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_every_operator_command(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.run(DEVICE_ADD)
    token = (tmp_path / "dev-0001.token").read_text().strip()
    assert token.startswith("otad_")
    assert "dev-0001" in site.run(DEVICE_LIST).stdout
    site.run(TOKEN_ADD)
    assert (tmp_path / "ci-model-x.token").read_text().startswith("otau_")
    assert "ci-model-x" in site.run(TOKEN_LIST).stdout
    site.header.write_text(f"Authorization: Bearer {token}\n")
    site.header.chmod(0o600)

    for command in GUNICORN:
        proc = site.start(command)
        try:
            assert json.loads(site.run(HEALTH).stdout)["status"] == "ok"
            fetched = site.run(FETCH).stdout
            assert fetched == (site.repo.root / "metadata" / "timestamp.json").read_text()
            bad = requests.get(
                f"https://127.0.0.1:{site.port}/metadata/%2e%2e/.ota/config.json",
                verify=str(site.tls.ca_cert),
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert bad.status_code == 400
        finally:
            site.stop(proc)

    before = json.loads((site.repo.root / "metadata" / "timestamp.json").read_bytes())
    site.run(REFRESH)  # fresh: nothing to do, and says so
    after = json.loads((site.repo.root / "metadata" / "timestamp.json").read_bytes())
    assert after == before
    assert site.run(AUDIT_VERIFY).stdout.startswith("ok:")
    flags = [json.loads(line) for line in site.run(GREP_FLAGS).stdout.splitlines()]
    assert flags and all(f["flag"] == "bad-path" for f in flags)
    site.run(DEVICE_REMOVE)
    assert "dev-0001" not in site.run(DEVICE_LIST).stdout

    proc = subprocess.Popen(
        ["bash", "-c", site.sub(SERVE)],
        cwd=tmp_path,
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split(" at ", 1)[1].strip()
        assert requests.get(f"{url}metadata/1.root.json", timeout=10).status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)


@pytest.mark.skipif(not NGINX.exists(), reason="nginx is installed by `make system-deps`")
def test_the_nginx_front_configuration(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.run(DEVICE_ADD)
    token = (tmp_path / "dev-0001.token").read_text().strip()
    (block,) = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    nginx_port = _free_port()
    server_block = site.sub(block).replace("listen 443 ssl;", f"listen 127.0.0.1:{nginx_port} ssl;")
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"{user}\nworker_processes 1;\ndaemon off;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/nginx-error.log;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n access_log off;\n client_body_temp_path {tmp_path}/body;\n"
        f" proxy_temp_path {tmp_path}/proxy;\n fastcgi_temp_path {tmp_path}/fcgi;\n"
        f" uwsgi_temp_path {tmp_path}/uwsgi;\n scgi_temp_path {tmp_path}/scgi;\n"
        f"{server_block}\n}}\n"
    )
    for folder in (tmp_path, site.repo.root, site.repo.root / "targets"):
        folder.chmod(0o755)
    checked = subprocess.run(
        [
            str(NGINX),
            "-t",
            "-c",
            str(conf),
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "nginx-error.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    gunicorn = site.start(GUNICORN[0])
    nginx = subprocess.Popen(
        [str(NGINX), "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "nginx-error.log")],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        front = f"https://127.0.0.1:{nginx_port}"
        s = requests.Session()
        s.trust_env = False
        s.verify = str(site.tls.ca_cert)
        for _ in range(100):  # bounded wait for nginx
            try:
                s.get(f"{front}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        from repository.devices import add_uploader
        from repository.layout import RepoPaths
        from repository.publisher.upload import upload_role

        data = os.urandom(200_000)
        path = "firmware/model-x/fw-1.0.0.bin"
        metadata, files = publisher_update(site.repo, "model-x", {path: data}, tmp=tmp_path / "p")
        token = add_uploader(RepoPaths(site.repo.root), "ci-nginx", ["model-x"])
        answer = upload_role(
            front, "model-x", metadata, files, token=token, ca_bundle=site.tls.ca_cert
        )
        assert answer["version"] == 1  # the upload went through nginx to gunicorn
        sha = hashlib.sha256(data).hexdigest()
        target = s.get(f"{front}/targets/firmware/model-x/{sha}.fw-1.0.0.bin", timeout=10)
        assert target.status_code == 200 and target.content == data
        assert "immutable" in target.headers["Cache-Control"]
        assert s.get(f"{front}/metadata/timestamp.json", timeout=10).status_code == 401
        ts = s.get(
            f"{front}/metadata/timestamp.json",
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert ts.content == (site.repo.root / "metadata" / "timestamp.json").read_bytes()
        assert s.get(f"{front}/targets/", timeout=10).status_code in (403, 404)
    finally:
        os.kill(nginx.pid, signal.SIGTERM)
        nginx.wait(timeout=30)
        site.stop(gunicorn)
