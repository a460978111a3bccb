"""The report queue: kept until a 2xx, in order; a report the server calls malformed is
dropped so it cannot block the queue; network errors never escape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuf.api import exceptions

from client.reports import ReportQueue


class FakeServer:
    def __init__(self, answers: list[int | Exception]):
        self.answers = answers
        self.bodies: list[dict[str, Any]] = []

    def post_json(self, url: str, body: bytes, *, timeout: float) -> int:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        self.bodies.append(json.loads(body))
        return answer


def _queue(tmp_path: Path, n: int) -> ReportQueue:
    queue = ReportQueue(tmp_path / "reports", "dev-1")
    for i in range(n):
        queue.enqueue(event="install", result="installed", installed_version=f"1.{i}", slot="B")
    return queue


def test_sent_in_order_until_one_is_not_accepted(tmp_path: Path) -> None:
    queue = _queue(tmp_path, 3)
    server = FakeServer([201, 503])
    assert queue.flush(server, "https://s/api/v1/reports") == 1  # type: ignore[arg-type]
    assert [b["installed_version"] for b in server.bodies] == ["1.0", "1.1"]
    assert len(queue.pending()) == 2
    server = FakeServer([exceptions.DownloadError("down")])
    assert queue.flush(server, "https://s/api/v1/reports") == 0  # type: ignore[arg-type]
    assert len(queue.pending()) == 2
    server = FakeServer([201, 201])
    assert queue.flush(server, "https://s/api/v1/reports") == 2  # type: ignore[arg-type]
    assert queue.pending() == []
    assert set(server.bodies[0]) == {
        "device_id",
        "installed_version",
        "slot",
        "result",
        "reason",
        "event",
    }


def test_malformed_reports_are_dropped_credentials_errors_kept(tmp_path: Path) -> None:
    queue = _queue(tmp_path, 2)
    server = FakeServer([400, 401])
    assert queue.flush(server, "https://s/api/v1/reports") == 0  # type: ignore[arg-type]
    assert len(queue.pending()) == 1  # the 400 one is gone, the 401 one waits
    assert (tmp_path / "reports").stat().st_mode & 0o777 == 0o700


def test_no_url_sends_nothing(tmp_path: Path) -> None:
    queue = _queue(tmp_path, 1)
    assert queue.flush(FakeServer([]), None) == 0  # type: ignore[arg-type]
    assert len(queue.pending()) == 1
