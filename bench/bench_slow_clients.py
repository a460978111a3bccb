"""Latency of a normal device check while slow clients hold hundreds of connections.

    .venv/bin/python bench/bench_slow_clients.py [--per-kind 200] [--checks 80]

Starts the real server (gunicorn over TLS with the shipped configuration, 2 workers x 16
threads) on 127.0.0.1, measures `--checks` device checks unloaded, then the same number while
an attacker (tests/helpers/slow_clients.py) holds `--per-kind` connections of each kind:
pre-TLS bytes, idle TCP, slow headers, slow authenticated upload body. A check is what a
device's visit starts with: a new TLS connection and `GET /metadata/timestamp.json` with its
token. Prints p50/p95 of both, the p95 ratio loaded/unloaded (same run) and the share of
loaded checks answered within 1 s. Bounded: every check has a 10 s timeout and the attack
stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repository.devices import add_device, add_uploader  # noqa: E402
from repository.layout import RepoPaths  # noqa: E402
from tests.helpers.certs import make_tls  # noqa: E402
from tests.helpers.gunicorn import run_gunicorn  # noqa: E402
from tests.helpers.server_repo import make_delegated_repo  # noqa: E402
from tests.helpers.slow_clients import KINDS, SlowClients  # noqa: E402

TIMEOUT = 10.0


def check(url: str, ca: Path, token: str) -> float:
    """One device check on a new connection; its latency in seconds (TIMEOUT if it failed)."""
    start = time.perf_counter()
    try:
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(
                f"{url}/metadata/timestamp.json",
                verify=str(ca),
                timeout=TIMEOUT,
                headers={"Authorization": f"Bearer {token}"},
            )
        if r.status_code != 200:
            return TIMEOUT
    except requests.RequestException:
        return TIMEOUT
    return time.perf_counter() - start


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def measure(url: str, ca: Path, token: str, n: int, spacing: float) -> list[float]:
    out = []
    for _ in range(n):
        out.append(check(url, ca, token))
        time.sleep(spacing)
    return out


def attack(port: int, ca: Path, per_kind: int, seconds: float, head_file: Path) -> None:
    """The attacker process: one JSON line when held, one more after stdin closes."""
    tls_attack = SlowClients(
        "127.0.0.1",
        port,
        ca,
        kinds={"slow-headers": per_kind, "slow-body": per_kind},
        body_head=head_file.read_bytes(),
        max_seconds=seconds + 60,
    )
    raw_attack = SlowClients(
        "127.0.0.1", port, ca, kinds={"pre-tls": per_kind, "idle": per_kind}, max_seconds=seconds
    )
    with tls_attack, raw_attack.after(tls_attack.wait_held):
        held = tls_attack.held() + raw_attack.wait_held()
        print(json.dumps({"held": held}), flush=True)
        sys.stdin.read()  # until the benchmark closes it
        held = tls_attack.held() + raw_attack.held()
        closed = tls_attack.closed_by_server + raw_attack.closed_by_server
    print(json.dumps({"held": held, "closed": closed}), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--attack"]:
        port, ca, per_kind, seconds, head_file = sys.argv[2:7]
        attack(int(port), Path(ca), int(per_kind), float(seconds), Path(head_file))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=200)
    parser.add_argument("--checks", type=int, default=80)
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between checks")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * args.per_kind + 512  # the attacker process inherits it
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))

    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        folder = Path(tmp)
        tls = make_tls(folder / "tls")
        repo = make_delegated_repo(folder / "repo")
        paths = RepoPaths(repo.root)
        token = add_device(paths, "dev-bench", "model-x")
        upload_token = add_uploader(paths, "ci", ["model-x"])
        body_head = (
            "POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {upload_token}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        with run_gunicorn(
            repo.root,
            cert=tls.server_cert,
            key=tls.server_key,
            ca_cert=tls.ca_cert,
            workers=2,
            threads=16,
        ) as server:
            port = urlsplit(server.url).port
            assert port is not None
            measure(server.url, tls.ca_cert, token, 5, 0)  # warm up
            unloaded = measure(server.url, tls.ca_cert, token, args.checks, args.spacing)
            head_file = folder / "body-head"
            head_file.write_bytes(body_head)
            seconds = args.checks * (args.spacing + TIMEOUT) + 120
            attack_args = [str(port), str(tls.ca_cert), str(args.per_kind), str(seconds)]
            attacker = subprocess.Popen(  # its own process: its loop does not slow our checks
                [sys.executable, __file__, "--attack", *attack_args, str(head_file)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert attacker.stdin is not None and attacker.stdout is not None
                held_before = json.loads(attacker.stdout.readline() or "{}")
                loaded = measure(server.url, tls.ca_cert, token, args.checks, args.spacing)
                attacker.stdin.close()  # stop
                after = json.loads(attacker.stdout.readline() or "{}")
                attacker.wait(timeout=60)
            finally:
                if attacker.poll() is None:
                    attacker.kill()
                    attacker.wait()
            held_after, closed = after.get("held", {}), after.get("closed", {})
            held_before = held_before.get("held", {})
            log = server.log_text()

    under = sum(1 for v in loaded if v < 1.0) / len(loaded)
    failed = sum(1 for v in loaded if v >= TIMEOUT)
    cpus = os.cpu_count()
    print(f"slow clients per kind: {args.per_kind}; checks: {args.checks} each; cpus: {cpus}")
    print(
        "held at start/end: "
        + ", ".join(f"{k} {held_before.get(k, 0)}/{held_after.get(k, 0)}" for k in KINDS)
    )
    print("closed by the server: " + ", ".join(f"{k} {closed.get(k, 0)}" for k in KINDS))
    print(f"server log lines 'dropped connection': {log.count('dropped connection')}")
    for name, values in (("unloaded", unloaded), ("attacked", loaded)):
        ms_50, ms_95 = statistics.median(values) * 1000, p95(values) * 1000
        print(f"{name}: p50 {ms_50:.1f} ms, p95 {ms_95:.1f} ms")
    print(f"p95 ratio attacked/unloaded: {p95(loaded) / p95(unloaded):.2f}")
    print(f"attacked checks within 1 s: {under:.1%} (failed: {failed})")


if __name__ == "__main__":
    main()
