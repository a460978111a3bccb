"""A bounded load test on real gunicorn over TLS while publishers upload: no request fails and
no client ever sees an inconsistent repository.

Readers: threads that each make a fixed number of complete "views" of the repository
(timestamp -> the snapshot it names -> every role version the snapshot names -> every target
that role lists, hash-checked), and threads running a fresh real ngclient Updater that
downloads and verifies every target. Writer: `upload_role` publishing new firmware versions.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import requests
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface, Updater

from repository.devices import add_device
from repository.layout import RepoPaths
from repository.publisher.upload import upload_role
from tests.helpers.certs import make_tls
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

VIEWS_PER_THREAD = 25
WALKERS = 6
UPDATERS = 2
UPDATER_ROUNDS = 4
PUBLISHES = 5


def _session(ca: Path, token: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(ca)
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def _get(s: requests.Session, url: str, counter: list[int]) -> bytes:
    r = s.get(url, timeout=30)
    counter[0] += 1
    if r.status_code != 200:
        raise AssertionError(f"GET {url}: {r.status_code}")
    return r.content


def walk_view(s: requests.Session, base: str, counter: list[int]) -> int:
    """One consistent view; returns the snapshot version seen. Raises on any inconsistency."""
    ts = json.loads(_get(s, f"{base}/metadata/timestamp.json", counter))["signed"]
    snap_version = ts["meta"]["snapshot.json"]["version"]
    snapshot = json.loads(_get(s, f"{base}/metadata/{snap_version}.snapshot.json", counter))
    assert snapshot["signed"]["version"] == snap_version
    for name, meta in snapshot["signed"]["meta"].items():
        role = name.removesuffix(".json")
        body = json.loads(_get(s, f"{base}/metadata/{meta['version']}.{role}.json", counter))
        assert body["signed"]["version"] == meta["version"], name
        for path, info in body["signed"]["targets"].items():
            sha = info["hashes"]["sha256"]
            directory, _, file_name = path.rpartition("/")
            data = _get(s, f"{base}/targets/{directory}/{sha}.{file_name}", counter)
            assert hashlib.sha256(data).hexdigest() == sha and len(data) == info["length"]
    return int(snap_version)


class _Fetcher(FetcherInterface):
    def __init__(self, s: requests.Session, counter: list[int]) -> None:
        self.s, self.counter = s, counter

    def _fetch(self, url: str):  # type: ignore[no-untyped-def]
        r = self.s.get(url, timeout=30)
        self.counter[0] += 1
        if r.status_code != 200:
            raise DownloadHTTPError(url, r.status_code)
        return iter([r.content])


def test_no_failed_request_and_no_inconsistent_view_during_publishes(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    repo: DelegatedRepo = make_delegated_repo(tmp_path / "repo")
    tokens = [
        add_device(RepoPaths(repo.root), f"dev-{i}", "model-x") for i in range(WALKERS + UPDATERS)
    ]
    errors: list[str] = []
    counters: list[list[int]] = []
    seen: list[int] = []
    lock = threading.Lock()

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - every failure is collected and asserted
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")

        return run

    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        workers=2,
        threads=8,
        config={"upload_tokens": False},
    ) as server:

        def walker(token: str) -> Callable[[], None]:
            counter = [0]
            counters.append(counter)

            def run() -> None:
                s = _session(tls.ca_cert, token)
                for _ in range(VIEWS_PER_THREAD):
                    version = walk_view(s, server.url, counter)
                    with lock:
                        seen.append(version)

            return run

        def updater(token: str, index: int) -> Callable[[], None]:
            counter = [0]
            counters.append(counter)

            def run() -> None:
                s = _session(tls.ca_cert, token)
                for n in range(UPDATER_ROUNDS):
                    cache = tmp_path / f"u{index}-{n}"
                    (cache / "m").mkdir(parents=True)
                    (cache / "t").mkdir()
                    u = Updater(
                        str(cache / "m"),
                        f"{server.url}/metadata/",
                        str(cache / "t"),
                        f"{server.url}/targets/",
                        fetcher=_Fetcher(s, counter),
                        bootstrap=repo.trusted_root,
                    )
                    u.refresh()
                    for v in range(PUBLISHES):
                        info = u.get_targetinfo(f"firmware/model-x/fw-{v}.0.0.bin")
                        if info is not None:
                            u.download_target(info, str(cache / "t" / f"fw-{v}"))

            return run

        def publish(v: int) -> None:
            path = f"firmware/model-x/fw-{v}.0.0.bin"
            metadata, files = publisher_update(
                repo,
                "model-x",
                {path: f"firmware {v}".encode() * 5000},
                tmp=tmp_path / f"pub{v}",
            )
            answer = upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
            assert answer["version"] == v + 1

        # ngclient refuses a delegated role that snapshot does not list yet: publish it first
        publish(0)

        def publisher() -> None:
            for v in range(1, PUBLISHES):
                publish(v)

        threads = [threading.Thread(target=guarded(walker(t))) for t in tokens[:WALKERS]]
        threads += [
            threading.Thread(target=guarded(updater(t, i))) for i, t in enumerate(tokens[WALKERS:])
        ]
        threads.append(threading.Thread(target=guarded(publisher)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads)
        final = walk_view(_session(tls.ca_cert, tokens[0]), server.url, [0])

    assert errors == []
    total = sum(c[0] for c in counters)
    print(f"{total} requests, snapshot versions seen by readers: {sorted(set(seen))}")
    assert total >= WALKERS * VIEWS_PER_THREAD * 3  # a fixed, bounded amount of real traffic
    assert final == 2 + PUBLISHES  # init, delegate, then one snapshot per publish
    assert len(set(seen)) >= 2, "readers never overlapped a publish; the test proved nothing"
