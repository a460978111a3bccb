"""The server's request log is hash-chained while two gunicorn workers (four threads each) write
it at once, over TLS on 127.0.0.1; `ota-repo audit verify` accepts the log as written and names
the line of any edit, removal or reordering, and an anchor kept elsewhere catches a rewrite."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helpers.certs import make_tls
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.repo import assert_one_line_error, ota_repo
from tests.helpers.server_repo import make_delegated_repo

REQUESTS = 40


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose request log two workers wrote concurrently; returns the repo root."""
    tmp = tmp_path_factory.mktemp("chain")
    repo = make_delegated_repo(tmp / "repo")
    tls = make_tls(tmp / "tls")
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"device_auth": False, "upload_tokens": False},
        workers=2,
    ) as server:

        def fetch(i: int) -> int:
            with requests.Session() as s:
                s.trust_env = False
                name = "timestamp.json" if i % 3 else f"{i}.missing.json"
                return s.get(
                    f"{server.url}/metadata/{name}", verify=str(tls.ca_cert), timeout=30
                ).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(fetch, range(REQUESTS)))
    assert set(codes) <= {200, 400, 404}
    return repo.root


def _copy(logged: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(logged, tmp_path / "repo", symlinks=True))


def _log(repo: Path) -> Path:
    return repo / ".ota" / "server-audit.log"


def test_request_log_written_by_two_workers_verifies(logged: Path) -> None:
    lines = _log(logged).read_text().splitlines()
    downloads = [json.loads(line) for line in lines if '"event":"download"' in line]
    assert len(downloads) >= REQUESTS * 2 // 3
    assert [json.loads(line)["seq"] for line in lines] == list(range(len(lines)))
    proc = ota_repo(logged, "audit", "verify")
    assert f"{len(lines)} request log lines" in proc.stdout


def _edit(lines: list[str]) -> list[str]:
    entry = json.loads(lines[5])
    entry["remote"] = "203.0.113.9"
    return [*lines[:5], json.dumps(entry, separators=(",", ":")), *lines[6:]]


@pytest.mark.parametrize(
    "tamper,message",
    [
        (_edit, "line 7: chain broken: line 6 was edited"),
        (lambda lines: [*lines[:5], *lines[6:]], "line 6: seq 6 where 5 was due"),
        (lambda lines: [*lines[:5], lines[6], lines[5], *lines[7:]], "line 6: seq 6 where 5"),
        (lambda lines: lines[3:], "line 1: seq 3 where 0 was due"),
    ],
    ids=["edited-line", "removed-line", "reordered-lines", "removed-first-lines"],
)
def test_tampered_request_log_fails_verify_naming_the_line(
    logged: Path, tmp_path: Path, tamper: object, message: str
) -> None:
    repo = _copy(logged, tmp_path)
    log = _log(repo)
    log.write_text("\n".join(tamper(log.read_text().splitlines())) + "\n")  # type: ignore[operator]
    proc = ota_repo(repo, "audit", "verify", check=False)
    assert_one_line_error(proc, "request log", message)


def test_an_anchor_kept_elsewhere_catches_a_rewritten_chain(logged: Path, tmp_path: Path) -> None:
    repo = _copy(logged, tmp_path)
    anchor = ota_repo(repo, "audit", "head", "--json")
    head = json.loads(anchor.stdout)["request_log"]
    ota_repo(repo, "audit", "verify", "--request-log-anchor", head)
    # an intruder drops the last line: the remaining chain is intact, the anchor is not
    log = _log(repo)
    log.write_text("\n".join(log.read_text().splitlines()[:-1]) + "\n")
    ota_repo(repo, "audit", "verify")
    proc = ota_repo(repo, "audit", "verify", "--request-log-anchor", head, check=False)
    assert_one_line_error(proc, "lines removed since it was anchored")
