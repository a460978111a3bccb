#!/usr/bin/env python3
"""Fallback load generator for bench_server.py when `wrk` is not installed.

`connections` keep-alive HTTPS clients, spread over worker processes, each sending GETs for
`seconds` (and at most 10 million requests). Prints requests/second; exits non-zero if any
response is not a 200. The token comes from BENCH_TOKEN in the environment, never argv.

Usage: _loadgen.py URL SECONDS CONNECTIONS
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import ssl
import sys
import threading
import time
from urllib.parse import urlsplit

MAX_REQUESTS = 10_000_000


def _client(url: str, deadline: float, counts: list[int], index: int) -> None:
    try:
        _requests(url, deadline, counts, index)
    except (OSError, http.client.HTTPException, ValueError) as e:
        counts[index] = -1
        print(f"load client failed: {e}", file=sys.stderr)


def _requests(url: str, deadline: float, counts: list[int], index: int) -> None:
    parts = urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # loopback benchmark against a throwaway certificate
    headers = {}
    if os.environ.get("BENCH_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['BENCH_TOKEN']}"
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context)
    done = 0
    while time.monotonic() < deadline and done < MAX_REQUESTS:
        conn.request("GET", parts.path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise ValueError(f"status {response.status} for {url}")
        done += 1
    counts[index] = done


def _process(url: str, seconds: float, threads: int, queue: multiprocessing.Queue[int]) -> None:
    deadline = time.monotonic() + seconds
    counts = [0] * threads
    workers = [
        threading.Thread(target=_client, args=(url, deadline, counts, i)) for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(-1 if min(counts) < 0 else sum(counts))


def main() -> None:
    url, seconds, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    processes = min(os.cpu_count() or 1, connections)
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    per = [
        connections // processes + (1 if i < connections % processes else 0)
        for i in range(processes)
    ]
    started = time.monotonic()
    procs = [multiprocessing.Process(target=_process, args=(url, seconds, n, queue)) for n in per]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    if min(results) < 0:
        raise SystemExit("failed requests (see above)")
    total = sum(results)
    for p in procs:
        p.join(timeout=30)
        if p.exitcode != 0:
            raise SystemExit("a load process failed")
    print(f"{total / (time.monotonic() - started):.1f}")


if __name__ == "__main__":
    main()
