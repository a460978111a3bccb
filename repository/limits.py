"""Bounds on what a publisher may sign: the security counter and how far ahead metadata expires.

One home for both, read by `ota-publish` (before it signs) and by the server's upload check
(before it publishes). The repository's `.ota/config.json` may set them in a `limits` section:

    "limits": {"max_security_counter": 2147483647, "max_expiry_days": 3650}

Why bound the counter: a device never installs an image whose counter is below its own, so the
way back from a bad image (or a stolen publisher key) is a new image with a higher counter. A
counter at the device's own maximum (2**63-1) could never be raised above; 2**31-1 by default
leaves that headroom (and fits the signed 32-bit anti-rollback counters of many boot loaders).
In a recovery the security team raises the bound, up to the device's 2**63-1, to publish above
an attacker's counter. Why bound the expiry: a role signed for decades outlives any compromise
of its key; 3650 days (ten years) is above every default and below absurd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from repository.errors import BadInputError

DEVICE_MAX_SECURITY_COUNTER = 2**63 - 1  # what ota-client accepts at all
DEFAULT_MAX_SECURITY_COUNTER = 2**31 - 1
DEFAULT_MAX_EXPIRY_DAYS = 3650
# A publisher's clock may run ahead of the server's: tolerated on top of max_expiry_days.
CLOCK_SKEW = timedelta(days=1)
SECTION = "limits"


def _positive_int(name: str, value: object, ceiling: int) -> int:
    if type(value) is not int or not 1 <= value <= ceiling:
        raise BadInputError(
            f"config {SECTION}.{name} must be an integer from 1 to {ceiling}, not {value!r}"
        )
    return value


@dataclass(frozen=True)
class Limits:
    """The bounds in force; `Limits()` are the defaults."""

    max_security_counter: int = DEFAULT_MAX_SECURITY_COUNTER
    max_expiry_days: int = DEFAULT_MAX_EXPIRY_DAYS

    @classmethod
    def from_config(cls, extra: Mapping[str, Any]) -> Limits:
        """The `limits` section of a repository config (`RepoConfig.extra`), else the defaults.

        Raises:
            BadInputError: the section is not an object, has an unknown key or a bad value.
        """
        section = extra.get(SECTION, {})
        if not isinstance(section, dict):
            raise BadInputError(f"config {SECTION} must be an object")
        unknown = sorted(set(section) - {"max_security_counter", "max_expiry_days"})
        if unknown:
            raise BadInputError(f"unknown setting {SECTION}.{unknown[0]} in the config")
        return cls(
            max_security_counter=_positive_int(
                "max_security_counter",
                section.get("max_security_counter", DEFAULT_MAX_SECURITY_COUNTER),
                DEVICE_MAX_SECURITY_COUNTER,
            ),
            max_expiry_days=_positive_int(
                "max_expiry_days", section.get("max_expiry_days", DEFAULT_MAX_EXPIRY_DAYS), 36500
            ),
        )

    def check_security_counter(self, value: object, where: str) -> int:
        """Raises:
        BadInputError: not an integer from 0 to `max_security_counter`.
        """
        if type(value) is not int or value < 0:
            raise BadInputError(f"{where}: the security counter must be an integer >= 0")
        if value > self.max_security_counter:
            raise BadInputError(
                f"{where}: security counter {value} is above the maximum "
                f"{self.max_security_counter} (limits.max_security_counter; a counter that "
                "high leaves no room to publish above it later)"
            )
        return value

    def check_expiry(self, expires: datetime, now: datetime, where: str) -> None:
        """Raises:
        BadInputError: `expires` is more than `max_expiry_days` after `now`.
        """
        if expires - now > timedelta(days=self.max_expiry_days) + CLOCK_SKEW:
            days = round((expires - now) / timedelta(days=1))
            raise BadInputError(
                f"{where} expires in {days} days, more than the maximum "
                f"{self.max_expiry_days} (limits.max_expiry_days)"
            )

    def check_firmware_custom(self, custom: object, where: str) -> None:
        """The security counter of a firmware image's `custom`, if it has one.

        Raises:
            BadInputError: the counter is not an integer or is above the bound.
        """
        if not isinstance(custom, dict):
            return
        firmware = custom.get("firmware")
        if isinstance(firmware, dict) and "security_counter" in firmware:
            self.check_security_counter(firmware["security_counter"], where)
