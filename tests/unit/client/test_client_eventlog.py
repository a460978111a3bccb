"""The hash-chained event log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.errors import LogCorruptError
from client.eventlog import GENESIS, EventLog


def _log(tmp_path: Path, n: int = 3) -> EventLog:
    log = EventLog(tmp_path / "events.log", "dev-1")
    for i in range(n):
        log.append("check", result="ok", to_version=f"1.{i}")
    return log


def test_chain_verifies(tmp_path: Path) -> None:
    log = _log(tmp_path)
    check = log.verify()
    assert (check.records, check.torn_tail) == (3, False)
    records = log.records()
    assert records[0]["prev"] == GENESIS and [r["seq"] for r in records] == [0, 1, 2]
    assert records[1]["device_id"] == "dev-1" and "reason" not in records[1]
    assert (tmp_path / "events.log").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("edit", ["change", "delete", "insert", "reorder"])
def test_edits_break_the_chain(tmp_path: Path, edit: str) -> None:
    _log(tmp_path, 4)
    path = tmp_path / "events.log"
    lines = path.read_text().splitlines()
    if edit == "change":
        record = json.loads(lines[1])
        record["result"] = "failed"
        lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    elif edit == "delete":
        del lines[1]
    elif edit == "insert":
        lines.insert(2, lines[1])
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LogCorruptError, match=r"line 2|line 3"):
        EventLog(path, "dev-1").verify()


def test_torn_tail_is_reported_then_dropped(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    with open(tmp_path / "events.log", "ab") as f:
        f.write(b'{"seq":2,"ev')  # power cut mid-write
    assert log.verify().torn_tail
    log.append("boot", result="ok")
    check = log.verify()
    assert (check.records, check.torn_tail) == (3, False)


def test_missing_log_is_empty(tmp_path: Path) -> None:
    assert EventLog(tmp_path / "none.log", "d").verify().records == 0


def test_a_damaged_last_record_does_not_stop_logging(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    path = tmp_path / "events.log"
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"not json at all"
    path.write_bytes(b"\n".join(lines))
    record = log.append("boot", result="ok")
    assert record["seq"] == 2
    with pytest.raises(LogCorruptError, match="line 2 is not a valid record"):
        log.verify()  # the damage stays visible
