"""Counting attacks by their real outcome: tried, refused, and device changes.

Each attack test wraps the attack in `with attack(device, "what") as a:`. Entering takes the
device's protected state (`LabDevice.protected()`) and counts one attack *tried*. Inside, the
test states the refusal it expects with `a.refused(outcome, ...)` (or `a.ignored(...)` when the
defence is that the device never even considers the bad data); that call asserts the exit code,
the one-line message and the event log record, and only when all of them hold counts the attack
*refused*. Leaving the block reads the protected state again and counts a *device change* when
anything differs; the test then fails. The only exceptions are the keys a test names in
`may_change`, each for a stated reason (honest metadata that is new to the device, or metadata
signed with the online keys the attacker legitimately holds in that scenario). The active slot,
its bytes and the installed version are among them only where the defence itself is a move to
another verified image (a tampered active slot falls back to the verified spare) or where an
honest update commits while the attack is on another channel (a slow report answer); those
tests assert the exact state the device ends in. The security counter is never among them.
The event log's hash chain must hold afterwards. The suite's summary line adds these up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from tests.attacks.toolkit.device import LabDevice, Outcome


@dataclass
class Tally:
    tried: int = 0
    refused: int = 0
    changes: int = 0
    log: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"attacks: {self.tried} tried, {self.refused} refused, {self.changes} device changes"


class Attempt:
    """One attack against one device (see the module docstring)."""

    def __init__(
        self, tally: Tally, device: LabDevice, name: str, *, may_change: tuple[str, ...] = ()
    ):
        self.tally = tally
        self.device = device
        self.name = name
        self.may_change = may_change
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}
        self.was_refused = False
        self._events_before = 0

    def __enter__(self) -> Attempt:
        self.before = self.device.protected()
        self._events_before = len(self.device.events())
        self.tally.tried += 1
        return self

    def new_events(self) -> list[dict[str, Any]]:
        return self.device.events()[self._events_before :]

    def refused(
        self,
        outcome: Outcome,
        *fragments: str,
        event: dict[str, Any] | None = None,
        exit_code: int = 1,
    ) -> str:
        """Assert the device refused: exit code, one line naming every fragment, and (if
        given) a new event log record with these fields whose reason names the first fragment.

        Returns:
            The one-line message.
        """
        assert outcome.returncode == exit_code, (
            f"{self.name}: expected exit {exit_code}, got {outcome.returncode}; "
            f"stdout={outcome.stdout!r} stderr={outcome.stderr!r}"
        )
        message = outcome.error
        texts: list[str] = []
        for fragment in fragments:
            options = (fragment,) if isinstance(fragment, str) else fragment
            assert any(o in message for o in options), (
                f"{self.name}: {fragment!r} not in {message!r}"
            )
            texts.extend(options)
        if event is not None:
            self.assert_event(event, texts)
        self._count_refusal(message)
        return message

    def ignored(
        self, outcome: Outcome, *, check: Any = None, event: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Assert the device ran normally and did not take the bait (`check(result)` holds).

        Returns:
            The command's JSON output.
        """
        result = outcome.json
        if check is not None:
            assert check(result), f"{self.name}: unexpected result {result}"
        if event is not None:
            self.assert_event(event, None)
        self._count_refusal(f"ignored: {result}")
        return result

    def assert_event(self, fields: dict[str, Any], reasons: list[str] | None) -> dict[str, Any]:
        """A new event log record with `fields` whose reason names one of `reasons`."""
        events = self.new_events()
        for record in events:
            if all(record.get(k) == v for k, v in fields.items()) and (
                not reasons or any(r in str(record.get("reason", "")) for r in reasons)
            ):
                return record
        raise AssertionError(
            f"{self.name}: no event log record {fields} (reason one of {reasons!r}) in {events}"
        )

    def _count_refusal(self, message: str) -> None:
        if not self.was_refused:
            self.was_refused = True
            self.tally.refused += 1
        self.tally.log.append(f"{self.name}: {message}")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.after = self.device.protected()
        if kind is None:
            self.device.verify_log()  # the refusal was logged in an intact hash chain
        keys = set(self.before) | set(self.after)
        changed = sorted(
            k for k in keys if k not in self.may_change and self.before.get(k) != self.after.get(k)
        )
        if changed:
            self.tally.changes += 1
            self.tally.log.append(f"{self.name}: DEVICE CHANGED: {changed}")
            if kind is None:
                raise AssertionError(
                    f"{self.name}: the attack changed the device: "
                    + "; ".join(
                        f"{k}: {self.before.get(k)!r} -> {self.after.get(k)!r}" for k in changed
                    )
                )
        if kind is None and not self.was_refused:
            raise AssertionError(f"{self.name}: the test never checked the refusal")
