"""The slow-client worker's pure parts: its limits from the environment, which requests the
event loop buffers, and the rate-limited drop log."""

from __future__ import annotations

from typing import Any

import pytest

from repository.server.slowclients import (
    BUFFERED_BODY_MAX,
    DropLog,
    Limits,
    body_kind,
    limits_from_env,
)


def test_limits_default_and_from_environment() -> None:
    assert limits_from_env({}, threads=16) == Limits(upload_threads=4, max_conns_per_ip=64)
    assert limits_from_env({"OTA_PLAINTEXT": "1"}, threads=2).max_conns_per_ip == 0
    assert limits_from_env({}, threads=2).upload_threads == 1
    tuned = limits_from_env(
        {
            "OTA_HANDSHAKE_TIMEOUT": "2.5",
            "OTA_HEADER_TIMEOUT": "4",
            "OTA_BODY_TIMEOUT": "30",
            "OTA_BODY_MIN_RATE": "0",
            "OTA_SEND_TIMEOUT": "60",
            "OTA_MAX_CONNS_PER_IP": "500",
            "OTA_UPLOAD_THREADS": "2",
        },
        threads=16,
    )
    assert tuned == Limits(2.5, 4.0, 30.0, 0, 60.0, 500, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTA_HANDSHAKE_TIMEOUT", "abc"),
        ("OTA_HEADER_TIMEOUT", "0"),
        ("OTA_BODY_TIMEOUT", "nan"),
        ("OTA_SEND_TIMEOUT", "99999"),
        ("OTA_BODY_MIN_RATE", "-1"),
        ("OTA_MAX_CONNS_PER_IP", "1e3"),
        ("OTA_UPLOAD_THREADS", "0"),
        ("OTA_UPLOAD_THREADS", "\u0663"),
    ],
    ids=["word", "zero", "nan", "too-long", "negative", "exponent", "no-threads", "arabic-digit"],
)
def test_bad_limit_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be "):
        limits_from_env({name: value}, threads=16)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: a", 0),
        (b"POST /api/v1/reports HTTP/1.1\r\nContent-Length: 120", 120),
        (b"POST / HTTP/1.1\r\ncontent-length:  7 ", 7),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", None),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5", None),
        (b"POST / HTTP/1.1\r\nContent-Length: +5", None),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue", None),
        (b"POST / HTTP/1.1\r\nContent-Length: 9999999999999", None),
    ],
    ids=["no-body", "length", "case-space", "chunked", "twice", "sign", "expect", "huge"],
)
def test_which_bodies_the_event_loop_buffers(head: bytes, expected: int | None) -> None:
    assert body_kind(head) == expected


def test_buffered_bodies_are_small() -> None:
    assert BUFFERED_BODY_MAX <= 64 * 1024


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)


def test_drop_log_is_rate_limited_per_kind_and_summarises() -> None:
    log = _Log()
    drops = DropLog(log, burst=3, window=3600)
    for i in range(10):
        drops.drop(f"10.0.0.{i}", "TLS handshake not done", " (in 5 s)")
    drops.drop("10.0.0.99", "request body too slow")
    assert log.lines == [
        "dropped connection from 10.0.0.0: TLS handshake not done (in 5 s)",
        "dropped connection from 10.0.0.1: TLS handshake not done (in 5 s)",
        "dropped connection from 10.0.0.2: TLS handshake not done (in 5 s)",
        "dropped connection from 10.0.0.99: request body too slow",
    ]
    drops._window = 0  # the window is over: the next flush writes the summary
    drops.flush()
    assert log.lines[-1].startswith(
        "dropped 7 more connections (TLS handshake not done) in the last"
    )
