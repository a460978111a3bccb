"""`ota-client provision`: record the factory image of a new device from verified metadata.

The factory writes an image into slot A; provisioning looks that image up in the repository
(through ngclient, from the provisioned trusted root), checks the slot's bytes against it, and
records it as the committed slot with its security counter.
"""

from __future__ import annotations

from client.bootctl import BootState
from client.config import SLOT_NAMES
from client.device import Device
from client.errors import StateError
from client.firmware import Firmware, check_policy
from client.state import SlotRecord


def provision(device: Device, slot: str, target_path: str) -> SlotRecord:
    """Record `target_path` as the committed image of `slot`.

    Raises:
        StateError: the device is provisioned already, or `slot` is not A or B.
        TargetNotFoundError, FirmwareFormatError, PolicyError: the target is unusable here.
        VerificationError: the slot does not hold that image.
        NetworkError, MetadataError: metadata could not be refreshed.
    """
    if slot not in SLOT_NAMES:
        raise StateError(f"unknown slot {slot!r}: use A or B")
    with device.lock():
        state = device.store.load()
        if any(state.slots.values()):
            raise StateError("this device is provisioned already")
        tuf = device.tuf()
        fw = Firmware.from_target(tuf.get_target(target_path))
        check_policy(fw, hardware_id=device.config.hardware_id, installed=None, security_counter=0)
        device.slots[slot].verify(fw.target)
        tuf.persist()
        record = SlotRecord.of(fw)
        state.slots[slot] = record
        state.security_counter = fw.security_counter
        device.store.save(state)
        device.bootctl.write(BootState(slot))
        device.events.append(
            "provision", result="ok", slot=slot, target=fw.path, to_version=fw.version_text
        )
    return record
