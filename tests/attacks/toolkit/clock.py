"""A controlled clock for the real `ota-client` process: libfaketime (Debian package `faketime`).

The client takes "now" from the system (python-tuf's reference time for expiry is
`datetime.now(UTC)`), so a test moves only the device's clock: the client process is started
through the `faketime` wrapper with a fixed offset (`faketime -f +691200 ota-client ...`), which
preloads libfaketime and shifts every wall-clock read in that process (`clock_gettime`, `time`,
`gettimeofday`: Python's `datetime.now`, OpenSSL's certificate validity check), while the test
process, the attack server and the repository keep real time. The monotonic clock is left alone
(`FAKETIME_DONT_FAKE_MONOTONIC`), so the client's download watchdog measures real durations.
`tests/attacks/test_toolkit_selftest.py` probes that the shift really reaches `datetime.now`.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

INSTALL_HINT = "libfaketime is missing: apt-get install -y faketime"
ENV = {"FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def offset(ahead: timedelta) -> str:
    """`ahead` as a libfaketime relative offset in whole seconds (`+691200`)."""
    seconds = int(ahead.total_seconds())
    assert seconds == ahead.total_seconds(), "whole seconds only"
    return f"{seconds:+d}"


def clock_prefix(ahead: timedelta) -> list[str]:
    """The command prefix that runs a process with its wall clock `ahead` of real time."""
    wrapper = shutil.which("faketime")
    if wrapper is None:
        pytest.fail(INSTALL_HINT)  # a freeze test must not pass (or skip) without its clock
    return [wrapper, "-f", offset(ahead)]
