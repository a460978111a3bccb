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
        "report_id",
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


def test_a_retried_report_sends_the_id_it_was_queued_with(tmp_path: Path) -> None:
    """The answer to the first send is lost (a timeout after the server stored it), then the
    device restarts: every retry of that report carries the same `report_id`, so the server
    can store it once; another report has another id."""
    import re

    _queue(tmp_path, 2)
    lost = FakeServer([503])  # stored, but the device never learns it
    assert ReportQueue(tmp_path / "reports", "dev-1").flush(lost, "https://s/r") == 0  # type: ignore[arg-type]
    again = FakeServer([201, 201])
    restarted = ReportQueue(tmp_path / "reports", "dev-1")  # a new process
    assert restarted.flush(again, "https://s/r") == 2  # type: ignore[arg-type]
    first, second = again.bodies
    assert first["report_id"] == lost.bodies[0]["report_id"]
    assert first["report_id"] != second["report_id"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", b["report_id"]) for b in again.bodies)


def test_a_report_queued_without_an_id_keeps_the_one_it_is_first_sent_with(
    tmp_path: Path,
) -> None:
    """A report an older client queued has no id: it gets one, stored in the queue before the
    first send, and the retry sends the same one."""
    folder = tmp_path / "reports"
    folder.mkdir(mode=0o700)
    old = {"device_id": "dev-1", "installed_version": "1.0", "result": "installed"}
    (folder / "00000000000000000001-1.json").write_text(json.dumps(old))
    queue = ReportQueue(folder, "dev-1")
    first = FakeServer([503])
    assert queue.flush(first, "https://s/r") == 0  # type: ignore[arg-type]
    retry = FakeServer([201])
    assert queue.flush(retry, "https://s/r") == 1  # type: ignore[arg-type]
    assert first.bodies[0]["report_id"] == retry.bodies[0]["report_id"]
    assert {k: v for k, v in retry.bodies[0].items() if k != "report_id"} == old
