"""Boot control backends: the data-dir file (simulated bootloader) and U-Boot environment
tools driven as commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from client.bootctl import BootState, FileBootControl, UBootEnvBootControl
from client.errors import StorageError

# A stand-in for libubootenv's fw_printenv / fw_setenv --script, keeping the environment in a
# JSON file (the tests' "flash").
FAKE_ENV = r"""
import json, os, sys
store = os.environ["FAKE_UBOOT_ENV"]
env = json.load(open(store)) if os.path.exists(store) else {}
if sys.argv[1] == "print":
    name = sys.argv[2]
    if name not in env:
        sys.exit(f"## Error: \"{name}\" not defined")
    print(f"{name}={env[name]}")
else:
    assert sys.argv[2] == "--script"
    for line in open(sys.argv[3]).read().splitlines():
        name, _, value = line.partition(" ")
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    json.dump(env, open(store + ".tmp", "w"))
    os.replace(store + ".tmp", store)
"""


def test_file_backend_roundtrip(tmp_path: Path) -> None:
    ctl = FileBootControl(tmp_path / "bootctl.json")
    assert ctl.read() == BootState("A")
    ctl.write(BootState("A", "B", 3))
    assert ctl.read() == BootState("A", "B", 3)


@pytest.mark.parametrize(
    "state",
    [BootState("C"), BootState("A", "A", 1), BootState("A", "B", -1)],
    ids=["unknown-slot", "trial-is-active", "negative-tries"],
)
def test_inconsistent_states_refused(tmp_path: Path, state: BootState) -> None:
    with pytest.raises(StorageError):
        FileBootControl(tmp_path / "b.json").write(state)


@pytest.fixture
def uboot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UBootEnvBootControl:
    script = tmp_path / "fake_env.py"
    script.write_text(FAKE_ENV)
    monkeypatch.setenv("FAKE_UBOOT_ENV", str(tmp_path / "env.json"))
    return UBootEnvBootControl(
        (sys.executable, str(script), "print"), (sys.executable, str(script), "set"), tmp_path
    )


def test_uboot_backend_roundtrip(uboot: UBootEnvBootControl, tmp_path: Path) -> None:
    assert uboot.read() == BootState("A")  # nothing set yet
    uboot.write(BootState("A", "B", 3))
    assert uboot.read() == BootState("A", "B", 3)
    uboot.write(BootState("B"))
    assert uboot.read() == BootState("B")
    assert (tmp_path / "env.json").read_text().count("ota_trial") == 0
    assert not list(tmp_path.glob(".fw_setenv.*"))  # the script file is removed


def test_uboot_command_failure_is_a_storage_error(tmp_path: Path) -> None:
    ctl = UBootEnvBootControl(("false",), ("false",), tmp_path)
    with pytest.raises(StorageError, match="boot environment command false exited 1"):
        ctl.write(BootState("A"))
