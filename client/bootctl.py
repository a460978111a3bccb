"""Boot control: which slot is committed, which one is on trial and how many tries it has left.

Two backends share one small interface:

* `FileBootControl` (default) keeps the bootloader's variables in `bootctl.json` in the data
  directory and `ota-client boot` plays the bootloader (it counts the tries).
* `UBootEnvBootControl` keeps them in the U-Boot environment through `fw_printenv` /
  `fw_setenv`-style commands (configurable), as variables `ota_active`, `ota_trial` and
  `ota_tries`. All changed variables are written in one `fw_setenv --script` call, which
  libubootenv applies atomically (redundant environment).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from client.config import SLOT_NAMES
from client.errors import StorageError
from client.storage import FILE_MODE, read_checked, write_checked


@dataclass(frozen=True)
class BootState:
    """What the bootloader knows.

    Attributes:
        active: The committed slot, booted when no trial is pending.
        trial: A slot to try before the committed one, or None.
        tries: Boot tries the trial slot has left.
    """

    active: str
    trial: str | None = None
    tries: int = 0

    def validate(self) -> BootState:
        if self.active not in SLOT_NAMES or self.trial not in (None, *SLOT_NAMES):
            raise StorageError(f"boot state names an unknown slot: {self}")
        if self.trial == self.active or self.tries < 0:
            raise StorageError(f"inconsistent boot state: {self}")
        return self


class BootControl(Protocol):
    def read(self) -> BootState:
        """The current boot state."""
        ...

    def write(self, state: BootState) -> None:
        """Replace the boot state atomically."""
        ...


class FileBootControl:
    """Boot state in a JSON file in the data directory (simulated bootloader)."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> BootState:
        """Raises:
        StorageError: both copies are damaged.
        """
        return read_checked(self.path, {"active": "A"}, _parse)

    def write(self, state: BootState) -> None:
        """Raises:
        StorageError: the file cannot be written.
        """
        write_checked(
            self.path,
            {"active": state.validate().active, "trial": state.trial, "tries": state.tries},
        )


def _parse(data: Any) -> BootState:
    tries = data.get("tries", 0)
    if type(tries) is not int:
        raise ValueError("tries is not an integer")
    return BootState(str(data["active"]), data.get("trial"), tries).validate()


class UBootEnvBootControl:
    """Boot state in the U-Boot environment, through `fw_printenv` / `fw_setenv`.

    Args:
        printenv: argv prefix printing `name=value` lines for the names appended to it.
        setenv: argv prefix applying a script file given as `--script FILE`.
        scratch_dir: Private folder for the script file.
        timeout: Seconds a command may take.
    """

    VARS = ("ota_active", "ota_trial", "ota_tries")

    def __init__(
        self,
        printenv: tuple[str, ...],
        setenv: tuple[str, ...],
        scratch_dir: Path,
        timeout: float = 30.0,
    ):
        self.printenv = printenv
        self.setenv = setenv
        self.scratch_dir = scratch_dir
        self.timeout = timeout

    def _run(self, argv: list[str]) -> str:
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise StorageError(f"boot environment command {argv[0]} failed: {e}") from e
        if proc.returncode != 0:
            # fw_printenv exits non-zero for a variable that is not set: handled by the caller
            raise StorageError(
                f"boot environment command {argv[0]} exited {proc.returncode}: "
                f"{proc.stderr.strip()[:200]}"
            )
        return proc.stdout

    def read(self) -> BootState:
        """Raises:
        StorageError: the commands fail or the variables are inconsistent.
        """
        values: dict[str, str] = {}
        for name in self.VARS:
            try:
                out = self._run([*self.printenv, name])
            except StorageError:
                continue  # not set
            key, sep, value = out.strip().partition("=")
            if sep and key == name:
                values[name] = value
        try:
            tries = int(values.get("ota_tries") or 0)
        except ValueError as e:
            raise StorageError("ota_tries in the boot environment is not a number") from e
        state = BootState(values.get("ota_active") or "A", values.get("ota_trial") or None, tries)
        return state.validate()

    def write(self, state: BootState) -> None:
        """Raises:
        StorageError: the command fails.
        """
        state.validate()
        lines = [
            f"ota_active {state.active}",
            f"ota_trial {state.trial}" if state.trial else "ota_trial",
            f"ota_tries {state.tries}",
        ]
        fd, script = tempfile.mkstemp(dir=self.scratch_dir, prefix=".fw_setenv.")
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                f.write("\n".join(lines) + "\n")
            self._run([*self.setenv, "--script", script])
        finally:
            os.unlink(script)
