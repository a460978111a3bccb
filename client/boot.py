"""`ota-client boot`: run at every start of the device, before anything else uses the slot.

On a pending trial: count the try (with the file backend this plays the bootloader), verify the
trial slot's image against the verified target it was installed from, run the health check, then
commit it, or fall back to the committed slot and record why. Without a trial: verify the
committed slot and "boot" it. A slot whose image does not verify is never booted.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from client.bootctl import BootState
from client.device import Device, other_slot
from client.errors import BootError, VerificationError
from client.state import DeviceState, SlotRecord
from client.testhooks import kill_point

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootResult:
    slot: str
    version: str
    committed: bool = False
    rolled_back: bool = False
    reason: str | None = None
    reboot_required: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "version": self.version,
            "committed": self.committed,
            "rolled_back": self.rolled_back,
            "reason": self.reason,
            "reboot_required": self.reboot_required,
        }


def health_check(device: Device, slot: str, record: SlotRecord) -> str | None:
    """Run the configured health check; returns None if healthy, else why not."""
    argv = device.config.boot.health_check
    if not argv:
        return None
    env = dict(os.environ)
    env.update(
        {
            "OTA_SLOT": slot,
            "OTA_VERSION": record.version_text,
            "OTA_SLOT_PATH": str(device.slots[slot].path),
            "OTA_TARGET": record.target.path,
        }
    )
    try:
        proc = subprocess.run(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
            capture_output=True,
            timeout=device.config.boot.health_timeout,
        )
    except subprocess.TimeoutExpired:
        return f"health check timed out after {device.config.boot.health_timeout:g} s"
    except OSError as e:
        return f"health check could not run: {e.strerror}"
    if proc.returncode != 0:
        return f"health check exited {proc.returncode}"
    return None


def _fallback(
    device: Device, state: DeviceState, boot: BootState, reason: str, *, reject: bool
) -> BootResult:
    trial = boot.trial
    record = state.slots[trial] if trial else None
    if reject and record is not None:
        state.reject(record.target)
    state.pending_trial = None
    device.store.save(state)
    device.bootctl.write(BootState(boot.active))
    kill_point("boot-fell-back")
    active = state.slots[boot.active]
    version = active.version_text if active else None
    device.log(
        "rollback",
        result="rolled-back",
        slot=boot.active,
        from_version=record.version_text if record else None,
        to_version=version,
        target=record.target.path if record else None,
        reason=reason,
    )
    device.report("rollback", "rolled-back", version or "none", boot.active, reason)
    result = _boot_committed(device, state, BootState(boot.active))
    # With a real bootloader this system runs from the trial slot: restart into the committed one.
    return BootResult(
        result.slot,
        result.version,
        rolled_back=True,
        reason=reason,
        reboot_required=not device.counts_tries,
    )


def _boot_committed(device: Device, state: DeviceState, boot: BootState) -> BootResult:
    name = boot.active
    record = state.slots[name]
    problem = "no verified image is recorded for it"
    if record is not None:
        try:
            device.slots[name].verify(record.target)
        except VerificationError as e:
            problem = str(e)
        else:
            if record.security_counter > state.security_counter:
                state.security_counter = record.security_counter  # finish a cut commit
                device.store.save(state)
            device.log("boot", result="ok", slot=name, to_version=record.version_text)
            return BootResult(name, record.version_text)
    # The committed slot does not verify: the other one may, if it is not below the counter.
    other = other_slot(name)
    spare = state.slots[other]
    if spare is not None and spare.security_counter >= state.security_counter:
        try:
            device.slots[other].verify(spare.target)
        except VerificationError:
            pass
        else:
            device.bootctl.write(BootState(other))
            reason = f"committed slot {name} does not verify ({problem})"
            device.log(
                "rollback",
                result="rolled-back",
                slot=other,
                to_version=spare.version_text,
                reason=reason,
            )
            device.report("rollback", "rolled-back", spare.version_text, other, reason)
            return BootResult(other, spare.version_text, rolled_back=True, reason=reason)
    device.log("boot", result="failed", slot=name, reason=problem)
    raise BootError(f"no bootable slot: slot {name}: {problem}")


def boot(device: Device) -> BootResult:
    """Boot the device (see the module docstring).

    Raises:
        BootError: no slot holds an image that verifies.
        StorageError: the state cannot be read or written.
    """
    with device.lock():
        state, bootstate = device.load()
        result = _boot(device, state, bootstate)
    device.flush_reports(budget=device.report_budget())  # the boot goes on
    return result


def _boot(device: Device, state: DeviceState, bootstate: BootState) -> BootResult:
    trial = bootstate.trial
    if trial is None:
        if state.pending_trial is not None:
            _settle_pending(device, state, bootstate)
        return _boot_committed(device, state, bootstate)
    max_tries = device.config.boot.max_tries
    if device.counts_tries:
        if bootstate.tries <= 0:
            return _fallback(device, state, bootstate, "boot tries exhausted", reject=True)
        device.bootctl.write(BootState(bootstate.active, trial, bootstate.tries - 1))
        kill_point("boot-counted")
    used = max_tries - bootstate.tries + (1 if device.counts_tries else 0)  # this try
    record = state.slots[trial]
    if record is None:
        return _fallback(
            device, state, bootstate, "no verified image recorded for the trial", reject=False
        )
    try:
        device.slots[trial].verify(record.target)
    except VerificationError as e:
        return _fallback(
            device, state, bootstate, f"trial image does not verify: {e}", reject=False
        )
    device.log(
        "boot",
        result="trial",
        slot=trial,
        to_version=record.version_text,
        reason=f"try {used} of {max_tries}",
    )
    problem = health_check(device, trial, record)
    kill_point("boot-health-checked")
    if problem is not None:
        return _fallback(device, state, bootstate, problem, reject=True)
    previous = state.slots[bootstate.active]
    device.bootctl.write(BootState(trial))
    kill_point("boot-committed")
    state.security_counter = max(state.security_counter, record.security_counter)
    state.pending_trial = None
    device.store.save(state)
    device.log(
        "commit",
        result="ok",
        slot=trial,
        target=record.target.path,
        from_version=previous.version_text if previous else None,
        to_version=record.version_text,
    )
    device.report(
        "commit",
        "committed",
        record.version_text,
        trial,
        f"{record.version_text} passed its health check in slot {trial}",
    )
    return BootResult(trial, record.version_text, committed=True)


def _settle_pending(device: Device, state: DeviceState, bootstate: BootState) -> None:
    """A trial was armed but the boot control shows none: either a commit was cut short after
    the boot control switched (finish it), or the bootloader gave up on the trial (record the
    rollback and never install that image again)."""
    name = state.pending_trial
    assert name is not None
    record = state.slots[name]
    state.pending_trial = None
    if name == bootstate.active and record is not None:
        state.security_counter = max(state.security_counter, record.security_counter)
        device.store.save(state)
        device.log(
            "commit",
            result="ok",
            slot=name,
            target=record.target.path,
            to_version=record.version_text,
            reason="completed after a power cut",
        )
        device.report(
            "commit",
            "committed",
            record.version_text,
            name,
            f"{record.version_text} committed in slot {name}",
        )
        return
    if record is not None:
        state.reject(record.target)
    device.store.save(state)
    active = state.slots[bootstate.active]
    reason = "boot tries exhausted (the bootloader fell back)"
    device.log(
        "rollback",
        result="rolled-back",
        slot=bootstate.active,
        from_version=record.version_text if record else None,
        to_version=active.version_text if active else None,
        target=record.target.path if record else None,
        reason=reason,
    )
    device.report(
        "rollback",
        "rolled-back",
        active.version_text if active else "none",
        bootstate.active,
        reason,
    )
