"""The red team's own instruments can tell a refusal from a success.

An honest update run as if it were an attack must be counted as a device change and fail the
test, and an attempt that never states its refusal must fail too. These use their own tally, so
the suite's summary line only counts real attacks. And the controlled clock the freeze tests
use really moves the clock inside the real `ota-client` process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.record import Attempt, Tally


def test_recorder_counts_an_accepted_update_as_a_device_change(lab: Lab) -> None:
    tally = Tally()
    lab.release("2.0.0")
    with pytest.raises(AssertionError, match="the attack changed the device"):
        with Attempt(tally, lab.device, "honest update posing as an attack"):
            assert lab.device.ok("update")["version"] == "2.0.0"
            assert lab.device.ok("boot")["committed"] is True
    assert (tally.tried, tally.refused, tally.changes) == (1, 0, 1)
    assert "DEVICE CHANGED: ['active_bytes', 'active_slot', 'installed_version'" in tally.log[0]


def test_recorder_requires_a_stated_refusal(lab: Lab) -> None:
    tally = Tally()
    with pytest.raises(AssertionError, match="never checked the refusal"):
        with Attempt(tally, lab.device, "attack without a refusal check"):
            lab.device.run("check")
    assert (tally.tried, tally.refused, tally.changes) == (1, 0, 0)


def test_recorder_rejects_a_wrong_refusal_message(lab: Lab) -> None:
    tally = Tally()
    lab.release("2.0.0")
    with pytest.raises(AssertionError, match="expected exit 1, got 0"):
        with Attempt(
            tally,
            lab.device,
            "success is not a refusal",
            may_change=(
                "metadata:timestamp.json",
                "metadata:snapshot.json",
                "metadata:firmware-model-x.json",
                "trial_slot",
            ),
        ) as a:
            a.refused(lab.device.run("update"), "anything")
    assert tally.refused == 0


def test_controlled_clock_reaches_the_client_process(lab: Lab) -> None:
    """libfaketime shifts `datetime.now` (python-tuf's reference time) inside the real
    `ota-client`, whose event log stamps each record with it, and nothing else: the same
    device on the real clock stamps real time. TLS to the lab server still verifies."""
    for ahead in (timedelta(days=6), timedelta(0)):
        before = datetime.now(UTC).replace(microsecond=0)
        out = lab.device.run("check", ahead=ahead if ahead else None)
        after = datetime.now(UTC)
        assert out.json["update_available"] is False
        stamp = datetime.fromisoformat(lab.device.events()[-1]["time"])
        assert before + ahead <= stamp <= after + ahead, (ahead, stamp)
