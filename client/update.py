"""Checking for, downloading and installing firmware into the inactive slot.

Order of durable steps (a power cut between any two leaves the committed slot bootable):

1. the inactive slot's record is cleared (it no longer counts as holding anything);
2. the image is streamed into the inactive slot, then python-tuf verifies the length of what
   arrived and the bytes read back from it (`client.onepass`; the resume record is
   checkpointed as it goes), then trimmed and fsynced (with `verify_from_medium`, also re-read
   from the medium and verified);
3. the slot's record is written (the verified target, version, security counter);
4. the boot control marks the slot `trial` with N tries;
5. the state notes the pending trial (so `boot` can tell when the bootloader gave up on it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tuf.api import exceptions

from client.bootctl import BootState
from client.device import Device, other_slot
from client.download import CHECKPOINT_BYTES, Progress
from client.errors import (
    FirmwareFormatError,
    Interrupted,
    LockedError,
    MetadataError,
    PolicyError,
    SlotTooSmallError,
    StateError,
    StorageError,
    TamperedError,
    TooLongError,
    TrialPendingError,
    UpdateError,
    VerificationError,
)
from client.firmware import Firmware, check_policy, hardware_prefix
from client.onepass import Durability, StreamView, verify_while_streaming
from client.state import SlotRecord
from client.testhooks import kill_point
from client.tufclient import TufClient, wrap_tuf_error

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    """The outcome of a check: the firmware to install, if any, and what was passed over."""

    installed: SlotRecord
    candidate: Firmware | None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "update_available": self.candidate is not None,
            "installed_version": self.installed.version_text,
            "candidate": None
            if self.candidate is None
            else {
                "target": self.candidate.path,
                "version": self.candidate.version_text,
                "length": self.candidate.target.length,
                "security_counter": self.candidate.security_counter,
            },
            "skipped": [{"target": p, "reason": r} for p, r in self.skipped],
        }


@dataclass(frozen=True)
class UpdateResult:
    installed: bool
    from_version: str
    version: str | None = None
    slot: str | None = None
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "result": "installed" if self.installed else "no-update",
            "from_version": self.from_version,
            "version": self.version,
            "slot": self.slot,
            "target": self.target,
            "reboot_required": self.installed,
        }


def _installed(device: Device) -> tuple[SlotRecord, int, BootState]:
    state, boot = device.load()
    record = state.slots[boot.active]
    if record is None:
        raise StateError("this device is not provisioned: run `ota-client provision` first")
    return record, max(state.security_counter, record.security_counter), boot


def find_update(device: Device, tuf: TufClient) -> CheckResult:
    """Pick the newest acceptable firmware for this device from verified metadata.

    The listing is a hint; the chosen target is looked up again through ngclient and must be
    identical, and the policy runs on that verified `TargetFile`.

    Raises:
        StateError: the device is not provisioned.
        MetadataError: the listing disagrees with the verified lookup.
        NetworkError, StorageError: as for a metadata refresh.
    """
    installed, counter, boot = _installed(device)
    state = device.store.load()
    hwid = device.config.hardware_id
    result = CheckResult(installed, None)
    acceptable: list[Firmware] = []
    slot = device.slots[other_slot(boot.active)]
    capacity: int | None = None
    for target in sorted(tuf.list_under(hardware_prefix(hwid)), key=lambda t: t.path):
        try:
            fw = Firmware.from_target(target)
            check_policy(
                fw, hardware_id=hwid, installed=installed.version, security_counter=counter
            )
            if capacity is None:
                capacity = slot.capacity()
            check_fits(fw, slot.name, capacity)
        except FirmwareFormatError as e:
            result.skipped.append((target.path, str(e)))
            continue
        except PolicyError as e:
            if not (fw.version <= installed.version):
                result.skipped.append((target.path, str(e)))
            continue
        if state.is_rejected(target):
            result.skipped.append((target.path, "rolled back on this device before"))
            continue
        acceptable.append(fw)
    if not acceptable:
        return result
    best = max(acceptable, key=lambda f: f.version)
    verified = tuf.get_target(best.path)
    if verified != best.target:
        raise MetadataError(f"the listing of {best.path} disagrees with the verified lookup")
    fw = Firmware.from_target(verified)
    check_policy(fw, hardware_id=hwid, installed=installed.version, security_counter=counter)
    check_fits(fw, slot.name, slot.capacity())
    result.candidate = fw
    return result


def check_fits(fw: Firmware, slot: str, capacity: int) -> None:
    """Refuse firmware whose signed length is more than slot `slot` can hold, before a byte of
    it is downloaded.

    Raises:
        SlotTooSmallError: it does not fit.
    """
    if fw.target.length > capacity:
        raise SlotTooSmallError(
            f"{fw.path} needs {fw.target.length} bytes; slot {slot} holds at most {capacity}"
        )


def check(device: Device) -> CheckResult:
    """`ota-client check`: refresh metadata and say whether an update is available.

    On a failure the queued reports are sent before it raises, as for `update`.

    Raises:
        UpdateError: metadata could not be refreshed or verified, or the device state is bad.
    """
    try:
        with device.lock():
            result = _check(device)
    except UpdateError as e:
        _flush_after_failure(device, e)
        raise
    device.flush_reports()
    return result


def _check(device: Device) -> CheckResult:
    tuf = device.tuf()
    try:
        result = find_update(device, tuf)
    except UpdateError as e:
        device.events.append("check", result="failed", reason=str(e))
        raise
    tuf.persist()
    device.events.append(
        "check",
        result="update-available" if result.candidate else "no-update",
        from_version=result.installed.version_text,
        to_version=result.candidate.version_text if result.candidate else None,
        target=result.candidate.path if result.candidate else None,
    )
    return result


def _flush_after_failure(device: Device, error: UpdateError) -> None:
    """Send what a failed command queued (a refusal report) now rather than with the next
    successful exchange, under the boot's time budget and quietly: a slow or unreachable report
    server changes neither how long the command takes beyond the budget nor its error line.
    Not on a stop (SIGTERM must end the agent at once) nor when another client process holds
    the device (it sends the queue itself)."""
    if isinstance(error, (Interrupted, LockedError)):
        return
    device.flush_reports(budget=device.report_budget(), quiet=True)


def explicit_firmware(device: Device, tuf: TufClient, path: str) -> Firmware:
    """The firmware at `path`, verified and accepted by policy.

    Raises:
        TargetNotFoundError: the verified metadata does not list it.
        FirmwareFormatError, PolicyError: it is malformed or not acceptable (SlotTooSmallError:
            longer than the inactive slot can hold).
    """
    installed, counter, boot = _installed(device)
    fw = Firmware.from_target(tuf.get_target(path))
    check_policy(
        fw,
        hardware_id=device.config.hardware_id,
        installed=installed.version,
        security_counter=counter,
    )
    slot = device.slots[other_slot(boot.active)]
    check_fits(fw, slot.name, slot.capacity())
    return fw


def _resume_offset(device: Device, key: dict[str, Any]) -> int:
    record = device.store.load_download()
    if record is None or {k: record.get(k) for k in key} != key:
        return 0
    offset = record.get("offset", 0)
    return offset if isinstance(offset, int) and offset >= 0 else 0


def install(
    device: Device, tuf: TufClient, fw: Firmware, *, progress: Progress | None = None
) -> str:
    """Stream `fw` into the inactive slot, verify it there and mark it for a trial boot.

    Returns:
        The slot it was installed into.

    Raises:
        StateError: a trial boot is already pending.
        VerificationError: the bytes in the slot do not match the verified target.
        NetworkError, Interrupted: the download stopped (it resumes next time).
        TamperedError: the sealed resume record does not authenticate (it is dropped, so the
            next attempt starts over).
        StorageError: the slot or the state cannot be written.
    """
    state, boot = device.load()
    if boot.trial is not None:
        raise TrialPendingError(
            f"slot {boot.trial} is waiting for its trial boot: reboot (ota-client boot) first"
        )
    name = other_slot(boot.active)
    target = fw.target
    key = {"slot": name, "path": target.path, "target": target.to_dict()}
    try:
        offset = _resume_offset(device, key)  # before anything changes
    except TamperedError:
        device.store.clear_download()  # never resume from a record that does not authenticate
        raise
    if state.slots[name] is not None or state.pending_trial is not None:
        state.slots[name] = None  # 1. from here on the slot holds nothing trusted
        state.pending_trial = None
        device.store.save(state)
    kill_point("install-slot-cleared")
    if offset == 0:
        device.store.clear_download()  # a stale record of the other kind (device key on/off)
        device.store.save_download({**key, "offset": 0})
    device.events.append(
        "download",
        result="started",
        target=target.path,
        to_version=fw.version_text,
        slot=name,
        reason=f"from byte {offset}",
    )

    def checkpoint(n: int) -> None:
        device.store.save_download({**key, "offset": n})

    try:
        _write_and_verify(device, tuf, fw, name, offset, checkpoint, progress)  # 2.
    except (TooLongError, VerificationError) as e:
        device.store.clear_download()  # never resume onto bytes that were refused
        _refused(device, fw, name, e)
        raise
    kill_point("install-written")
    device.store.clear_download()
    state.slots[name] = SlotRecord.of(fw)  # 3.
    device.store.save(state)
    kill_point("install-recorded")
    device.bootctl.write(BootState(boot.active, name, device.config.boot.max_tries))  # 4.
    kill_point("install-trial-set")
    state.pending_trial = name  # 5. lets boot tell a trial the bootloader gave up on
    device.store.save(state)
    return name


def _write_and_verify(
    device: Device,
    tuf: TufClient,
    fw: Firmware,
    name: str,
    offset: int,
    checkpoint: Callable[[int], None],
    progress: Progress | None,
) -> None:
    """Stream the image into slot `name` while python-tuf verifies it read back from the slot;
    make it durable.

    Raises:
        TooLongError, VerificationError: refused (the caller forgets the partial download).
        NetworkError, Interrupted: stopped early; the resume record says how far it got.
        StorageError: the slot cannot be written.
    """
    slot = device.slots[name]
    target = fw.target
    step = min(CHECKPOINT_BYTES, max(256 * 1024, target.length // 8))
    stopped: Exception | None = None
    fd = slot.open_for_write(0)
    try:
        rfd = slot.open_for_read()
        try:
            if offset >= target.length:
                start, chunks = target.length, None
            else:
                start, chunks = tuf.open_target(target, offset)
            with Durability(fd, durable=start, step=step, checkpoint=checkpoint) as durability:
                view = StreamView(
                    target,
                    chunks,
                    fd,
                    rfd,
                    present=start,
                    on_written=durability.written,
                    progress=progress,
                )
                try:
                    mismatch = verify_while_streaming(view, target)
                except (exceptions.DownloadError, Interrupted) as e:
                    stopped, mismatch = e, None
            if durability.error is not None:
                raise StorageError(f"cannot make slot {name} durable: {durability.error}")
        finally:
            os.close(rfd)
        if stopped is None and mismatch is not None and view.present < target.length:
            stopped = exceptions.DownloadError(
                f"ended early at {view.present} of {target.length} bytes"
            )
        if stopped is not None:
            os.fdatasync(fd)
            checkpoint(view.present)  # resume from here next time
            if isinstance(stopped, Interrupted):
                raise stopped
            raise wrap_tuf_error(
                stopped, f"download of {target.path} failed (it will resume)"
            ) from stopped
        if mismatch is None and view.present != target.length:  # never mark other bytes
            mismatch = exceptions.LengthOrHashMismatchError(
                f"received {view.present} bytes, the verified length is {target.length}"
            )
        if mismatch is None:
            slot.finish_write(fd, view.present)
    except OSError as e:
        raise StorageError(f"cannot write slot {name}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    if mismatch is None and device.config.verify_from_medium:
        slot.drop_cache()
        try:
            slot.verify(target)
        except VerificationError as e:
            mismatch = e
    if mismatch is not None:
        raise VerificationError(
            f"refused {target.path}: slot {name} does not hold {target.path}: {mismatch}"
        ) from mismatch


def _refused(device: Device, fw: Firmware, slot: str, error: Exception) -> None:
    device.events.append(
        "verify",
        result="failed",
        target=fw.path,
        to_version=fw.version_text,
        slot=slot,
        reason=str(error),
    )
    installed = device.status().installed
    device.report(
        "install", "failed", installed.version_text if installed else "none", slot, str(error)
    )


def update(
    device: Device, *, target_path: str | None = None, progress: Progress | None = None
) -> UpdateResult:
    """`ota-client update`: check, then download, verify and install the update if any.

    On a failure the queued reports (its refusal report) are sent before it raises, within
    `Device.report_budget()`; whatever the report server does, the error raised is the same.

    Raises:
        UpdateError: anything refused or failed; the committed slot is untouched.
    """
    try:
        with device.lock():
            result = _update(device, target_path, progress)
    except UpdateError as e:
        _flush_after_failure(device, e)
        raise
    if result.installed:
        device.flush_reports()
    return result


def _update(device: Device, target_path: str | None, progress: Progress | None) -> UpdateResult:
    trial = device.bootctl.read().trial
    if trial is not None:
        raise TrialPendingError(
            f"slot {trial} is waiting for its trial boot: reboot (ota-client boot) first"
        )
    tuf = device.tuf()
    try:
        if target_path is not None:
            installed = _installed(device)[0]
            fw: Firmware | None = explicit_firmware(device, tuf, target_path)
        else:
            found = find_update(device, tuf)
            installed, fw = found.installed, found.candidate
    except UpdateError as e:
        device.events.append(
            "check",
            result="refused" if isinstance(e, (PolicyError, FirmwareFormatError)) else "failed",
            target=target_path,
            reason=str(e),
        )
        raise
    tuf.persist()
    if fw is None:
        device.events.append("check", result="no-update", from_version=installed.version_text)
        return UpdateResult(False, installed.version_text)
    try:
        slot = install(device, tuf, fw, progress=progress)
    except VerificationError:
        raise
    except UpdateError as e:
        device.events.append(
            "download",
            result="failed",
            target=fw.path,
            to_version=fw.version_text,
            reason=str(e),
        )
        raise
    device.events.append(
        "install",
        result="ok",
        target=fw.path,
        slot=slot,
        from_version=installed.version_text,
        to_version=fw.version_text,
    )
    device.report(
        "install",
        "installed",
        installed.version_text,
        slot,
        f"{fw.version_text} installed in slot {slot}; waiting for a trial boot",
    )
    return UpdateResult(True, installed.version_text, fw.version_text, slot, fw.path)
