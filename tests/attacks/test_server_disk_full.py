"""Uploads to real gunicorn over TLS whose `metadata/` is a small tmpfs that is full.

The server runs in its own user and mount namespace (`unshare -rm`, no root needed), with a
tmpfs mounted over the repository's `metadata/`; the test reads and fills that tmpfs through
`/proc/<pid>/root`, the server's own view of the file system.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from repository.devices import add_uploader
from repository.layout import RepoPaths
from repository.server.requestlog import read_request_log, request_log_path
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import BIN, _wait_for_port, stop_pid
from tests.helpers.repo import PASSPHRASE
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

FW = "firmware/model-x/fw-1.0.0.bin"
FW_BYTES = os.urandom(100_000)


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="no user/mount namespaces")


@contextmanager
def _server_on_small_metadata_fs(repo: Path, tls: TlsFiles) -> Iterator[tuple[str, Path, Path]]:
    """gunicorn with `repo/metadata` on a 1 MiB tmpfs; yields (url, metadata as the server
    sees it, log)."""
    saved = repo.parent / "metadata-copy"
    shutil.copytree(repo / "metadata", saved)
    meta = repo / "metadata"
    script = (
        f"mount -t tmpfs -o size=1m,mode=0755 tmpfs '{meta}' && cp -a '{saved}/.' '{meta}/' "
        f"&& exec '{BIN / 'gunicorn'}' -c python:repository.server.gunicorn_conf "
        "'repository.server:create_app()'"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env.update(
        OTA_REPO=str(repo),
        OTA_BIND="127.0.0.1:0",
        OTA_WORKERS="1",
        OTA_THREADS="4",
        OTA_KEY_PASSPHRASE=PASSPHRASE,
        OTA_TLS_CERT=str(tls.server_cert),
        OTA_TLS_KEY=str(tls.server_key),
    )
    log = repo.parent / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "-rm", "sh", "-c", script],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        port = _wait_for_port(proc, log, time.monotonic() + 60)
        yield f"https://127.0.0.1:{port}", Path(f"/proc/{proc.pid}/root{meta}"), log
    finally:
        stop_pid(proc)


def _fill(folder: Path, leave_pages: int) -> Path:
    """Fill the file system of `folder` so that `leave_pages` pages stay free."""
    st = os.statvfs(folder)
    ballast = folder / "ballast"
    ballast.write_bytes(b"\0" * ((st.f_bavail - leave_pages) * st.f_bsize))
    assert os.statvfs(folder).f_bavail == leave_pages
    return ballast


def _upload(url: str, tls: TlsFiles, token: str, metadata: bytes, local: Path) -> requests.Response:
    return requests.post(
        f"{url}/api/v1/publish",
        headers={"Authorization": f"Bearer {token}"},
        data={"role": "model-x"},
        files=[
            ("metadata", ("metadata.json", io.BytesIO(metadata))),
            ("target", (FW, local.read_bytes())),
        ],
        verify=str(tls.ca_cert),
        timeout=60,
    )


@pytest.fixture
def site(tmp_path: Path) -> tuple[DelegatedRepo, TlsFiles, str]:
    repo = make_delegated_repo(tmp_path / "repo", ("model-x",))
    token = add_uploader(RepoPaths(repo.root), "ci-x", ["model-x"])
    return repo, make_tls(tmp_path / "tls"), token


def _target_files(repo: DelegatedRepo) -> list[str]:
    folder = repo.root / "targets" / "firmware" / "model-x"
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.mark.parametrize("free_pages", [0, 1], ids=["role-write", "snapshot-write"])
def test_disk_full_upload_gets_507_is_audited_and_leaves_nothing_behind(
    site: tuple[DelegatedRepo, TlsFiles, str], tmp_path: Path, free_pages: int
) -> None:
    repo, tls, token = site
    metadata, files = publisher_update(repo, "model-x", {FW: FW_BYTES}, tmp=tmp_path / "pub")
    with _server_on_small_metadata_fs(repo.root, tls) as (url, meta, log):
        before = sorted(os.listdir(meta))
        ballast = _fill(meta, free_pages)
        answer = _upload(url, tls, token, metadata, files[FW])
        assert answer.status_code == 507, answer.text
        error = answer.json()["error"]
        assert "disk is full" in error and "\n" not in error
        assert sorted(os.listdir(meta)) == sorted([*before, "ballast"])  # no orphan metadata
        assert _target_files(repo) == []  # no orphan firmware
        refused = [
            e
            for e in read_request_log(request_log_path(RepoPaths(repo.root).private))
            if e["event"] == "upload-refused"
        ]
        assert refused and refused[-1]["status"] == 507
        assert "Traceback" not in log.read_text()

        ballast.unlink()  # space again: the same upload goes through
        again = _upload(url, tls, token, metadata, files[FW])
        assert again.status_code == 201, again.text
        assert (meta / "1.model-x.json").read_bytes() == metadata
        assert json.loads((meta / "timestamp.json").read_bytes())["signed"]["version"] > 1
        assert len(_target_files(repo)) == 1


def test_a_version_left_by_an_interrupted_publish_is_never_rewritten(
    site: tuple[DelegatedRepo, TlsFiles, str], tmp_path: Path
) -> None:
    repo, tls, token = site
    meta = repo.root / "metadata"
    snapshot = json.loads((meta / "timestamp.json").read_bytes())["signed"]["meta"]
    next_snapshot = snapshot["snapshot.json"]["version"] + 1
    left = {"1.model-x.json": b'{"left": "by a killed writer"}'}
    left[f"{next_snapshot}.snapshot.json"] = b'{"left": "too"}'
    for name, data in left.items():
        (meta / name).write_bytes(data)
    metadata, files = publisher_update(repo, "model-x", {FW: FW_BYTES}, tmp=tmp_path / "pub")
    with _server_on_small_metadata_fs(repo.root, tls) as (url, served, _log):
        refused = _upload(url, tls, token, metadata, files[FW])
        assert refused.status_code == 409, refused.text
        assert "never rewritten" in refused.json()["error"]
        assert _target_files(repo) == []
        (served / "1.model-x.json").unlink()  # the operator removes the unlisted leftover
        answer = _upload(url, tls, token, metadata, files[FW])
        assert answer.status_code == 201, answer.text
        assert (served / f"{next_snapshot}.snapshot.json").read_bytes() == left[
            f"{next_snapshot}.snapshot.json"
        ]
        published = json.loads((served / "timestamp.json").read_bytes())["signed"]["meta"]
        assert published["snapshot.json"]["version"] == next_snapshot + 1
