"""One device: its configuration, private data directory, slots, boot control and log.

`Device` wires the pieces together; the update and boot procedures live in `client.update` and
`client.boot`. Building a `Device` checks the data directory's permissions and refuses to go on
if anything there is open to other users.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from client.bootctl import BootControl, BootState, FileBootControl, UBootEnvBootControl
from client.config import (
    MAX_CA_BUNDLE_BYTES,
    MAX_CERT_BYTES,
    MAX_TOKEN_BYTES,
    SLOT_NAMES,
    ClientConfig,
)
from client.errors import ConfigError, StorageError
from client.eventlog import EventLog
from client.fetcher import DeviceFetcher, FetchLimits
from client.reports import ReportQueue
from client.sealed import load_device_key
from client.slots import Slot
from client.state import DeviceState, SlotRecord, StateStore
from client.storage import (
    check_private_file,
    check_private_tree,
    check_regular_file,
    ensure_private_dir,
    exclusive_lock,
    read_limited,
)
from client.tufclient import MAX_ROOT_BYTES, TufClient

logger = logging.getLogger(__name__)

# Seconds a command that is ending (the boot, a failed update or check) gives queued reports
# before it returns without them: reports are best effort and must not hold the device.
REPORT_BUDGET = 5.0


def other_slot(name: str) -> str:
    return SLOT_NAMES[1 - SLOT_NAMES.index(name)]


@dataclass(frozen=True)
class Status:
    """What `ota-client status` shows."""

    device_id: str
    hardware_id: str
    active_slot: str
    installed: SlotRecord | None
    trial_slot: str | None
    trial_tries: int
    security_counter: int
    slots: dict[str, SlotRecord | None]
    reports_queued: int

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "hardware_id": self.hardware_id,
            "active_slot": self.active_slot,
            "installed_version": self.installed.version_text if self.installed else None,
            "installed_target": self.installed.target.path if self.installed else None,
            "trial_slot": self.trial_slot,
            "trial_tries_left": self.trial_tries,
            "security_counter": self.security_counter,
            "slots": {k: (v.to_dict() if v else None) for k, v in self.slots.items()},
            "reports_queued": self.reports_queued,
        }


class Device:
    """The device client's view of this device.

    Args:
        config: The validated configuration.
        stop: Set to stop long transfers (SIGTERM in the agent).

    Raises:
        InsecureStorageError: the data directory (or the token, client key or device key) is
            too open.
        StorageError: the data directory or the device key file cannot be created or read.
        ConfigError: the device key file does not hold a 32-byte key.
    """

    def __init__(self, config: ClientConfig, *, stop: threading.Event | None = None):
        self.config = config
        self.stop = stop or threading.Event()
        self.data_dir = config.data_dir
        ensure_private_dir(self.data_dir)
        check_private_tree(self.data_dir)
        for secret, what in (
            (config.server.token_file, "token file"),
            (config.server.client_key, "client key"),
        ):
            if secret is not None:
                check_private_file(secret, what)
        key_file = config.storage.device_key_file
        self.device_key = None if key_file is None else load_device_key(key_file)
        self.metadata_dir = self.data_dir / "metadata"
        ensure_private_dir(self.metadata_dir)
        self.store = StateStore(self.data_dir, key=self.device_key)
        self.events = EventLog(self.data_dir / "events.log", config.device_id)
        self.reports = ReportQueue(self.data_dir / "reports", config.device_id)
        self.slots = {name: Slot(name, path) for name, path in config.slots.items()}
        self.bootctl: BootControl
        if config.boot.backend == "uboot":
            self.bootctl = UBootEnvBootControl(
                config.boot.printenv, config.boot.setenv, self.data_dir
            )
            self.counts_tries = False  # the bootloader counts
        else:
            self.bootctl = FileBootControl(self.data_dir / "bootctl.json")
            self.counts_tries = True  # ota-client boot plays the bootloader
        self._fetcher: DeviceFetcher | None = None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Raises:
        LockedError: another client process is working.
        """
        with exclusive_lock(self.data_dir / "lock"):
            yield

    # -- network -------------------------------------------------------------------------------

    def fetcher(self) -> DeviceFetcher:
        """Raises:
        ConfigError: the token file cannot be read, or a file TLS reads (CA bundle, client
            certificate or key) is not a regular file of a bounded size.
        """
        if self._fetcher is None:
            self._fetcher = self._new_fetcher()
        return self._fetcher

    def _new_fetcher(self) -> DeviceFetcher:
        """Raises:
        ConfigError: the token file cannot be read.
        """
        server = self.config.server
        token = None
        if server.token_file is not None:
            try:
                raw = read_limited(server.token_file, "server.token_file", MAX_TOKEN_BYTES)
                token = raw.decode("utf-8").strip()
            except (OSError, StorageError, UnicodeDecodeError) as e:
                raise ConfigError(f"cannot read token file {server.token_file}") from e
            if not token or any(c.isspace() for c in token):
                raise ConfigError(f"token file {server.token_file} holds no single token")
        for path, what, limit in (
            (server.ca_bundle, "server.ca_bundle", MAX_CA_BUNDLE_BYTES),
            (server.client_cert, "server.client_cert", MAX_CERT_BYTES),
            (server.client_key, "server.client_key", MAX_CERT_BYTES),
        ):
            if path is not None:
                try:
                    check_regular_file(path, what, limit)  # TLS reads it: never a FIFO
                except StorageError as e:
                    raise ConfigError(str(e)) from e
        cert = None
        if server.client_cert is not None and server.client_key is not None:
            cert = (server.client_cert, server.client_key)
        return DeviceFetcher(
            ca_bundle=server.ca_bundle,
            token=token,
            client_cert=cert,
            limits=FetchLimits(
                server.connect_timeout,
                server.read_timeout,
                server.max_download_seconds,
                server.min_rate_bytes,
                server.min_rate_grace_seconds,
            ),
            stop=self.stop,
        )

    def tuf(self) -> TufClient:
        """A fresh ngclient session from the provisioned trusted root.

        Raises:
            ConfigError: the trusted root file cannot be read (or is not a regular file of at
                most `MAX_ROOT_BYTES`).
            MetadataError: it does not load as root metadata.
        """
        try:
            bootstrap = read_limited(self.config.trusted_root, "trusted_root", MAX_ROOT_BYTES)
        except (OSError, StorageError) as e:
            raise ConfigError(
                f"cannot read the provisioned trusted root {self.config.trusted_root}"
            ) from e
        return TufClient(
            self.metadata_dir,
            self.config.server.metadata_url,
            self.config.server.targets_url,
            self.fetcher(),
            bootstrap=bootstrap,
        )

    def report_budget(self) -> float:
        """Seconds `flush_reports(budget=...)` gets when a command ends (the boot, a failure)."""
        return min(REPORT_BUDGET, self.config.server.read_timeout)

    def flush_reports(self, *, budget: float | None = None, quiet: bool = False) -> None:
        """Send queued reports; never raises. Reports are best effort: whatever is not accepted
        stays queued. With a `budget` (the boot, a failed update or check), sending runs in its
        own thread and session and is abandoned after that many seconds, so a slow server never
        holds the command; without, it uses this device's session and its timeouts. `quiet`
        logs why nothing was sent at INFO only (a failing command's stderr stays its one
        error line)."""
        level = logging.INFO if quiet else logging.WARNING
        if not self.config.server.reports_url or not self.reports.pending():
            return
        if budget is None:
            try:
                self.reports.flush(
                    self.fetcher(),
                    self.config.server.reports_url,
                    timeout=self.config.server.read_timeout,
                )
            except (ConfigError, StorageError, OSError) as e:
                logger.log(level, "reports not sent: %s", e)
            return
        try:
            fetcher = self._new_fetcher()  # its own session: the sender may outlive this call
        except ConfigError as e:
            logger.log(level, "reports not sent: %s", e)
            return

        def send() -> None:
            try:
                self.reports.flush(
                    fetcher,
                    self.config.server.reports_url,
                    timeout=min(budget, self.config.server.read_timeout),
                )
            except (StorageError, OSError) as e:
                logger.log(level, "reports not sent: %s", e)
            finally:
                fetcher.close()

        sender = threading.Thread(target=send, name="reports", daemon=True)
        sender.start()
        sender.join(budget)
        if sender.is_alive():
            logger.log(level, "the report server is too slow: reports stay queued")

    def log(self, event: str, **fields: Any) -> None:
        """Append to the event log where a failure to log must not stop the work (booting)."""
        try:
            self.events.append(event, **fields)
        except StorageError as e:
            logger.warning("event not logged: %s", e)

    def report(
        self, event: str, result: str, version: str, slot: str | None, reason: str | None
    ) -> None:
        """Queue a report (a failure to queue must not undo the work it reports)."""
        try:
            self.reports.enqueue(
                event=event, result=result, installed_version=version, slot=slot, reason=reason
            )
        except StorageError as e:
            logger.warning("report not queued: %s", e)

    # -- state ---------------------------------------------------------------------------------

    def load(self) -> tuple[DeviceState, BootState]:
        """Raises:
        StorageError: a state file is unreadable.
        """
        return self.store.load(), self.bootctl.read()

    def status(self) -> Status:
        """Raises:
        StorageError: a state file is unreadable.
        """
        state, boot = self.load()
        installed = state.slots[boot.active]
        counter = max(state.security_counter, installed.security_counter if installed else 0)
        return Status(
            device_id=self.config.device_id,
            hardware_id=self.config.hardware_id,
            active_slot=boot.active,
            installed=installed,
            trial_slot=boot.trial,
            trial_tries=boot.tries,
            security_counter=counter,
            slots=dict(state.slots),
            reports_queued=len(self.reports.pending()),
        )

    def reboot(self) -> None:
        """Run the configured reboot command (none: just say a reboot is needed)."""
        argv = self.config.boot.reboot_command
        if not argv:
            logger.info("a reboot is needed to boot the new slot state")
            return
        logger.info("rebooting")
        try:
            subprocess.run(list(argv), check=False, stdin=subprocess.DEVNULL, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            logger.error("reboot command failed: %s", e)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None
