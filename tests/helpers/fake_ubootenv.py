#!/usr/bin/env python3
"""Stand-ins for libubootenv's `fw_printenv` and `fw_setenv`, keeping the U-Boot environment in
a JSON file named by $FAKE_UBOOT_ENV (the tests' "flash"), and the boot script's decision.

    fw_printenv [-n] [NAME...]     prints NAME=value (exit 1 if a NAME is not defined)
    fw_setenv NAME [VALUE]         sets or (without VALUE) deletes
    fw_setenv --script FILE        applies "NAME VALUE" / "NAME" lines at once
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _load(store: Path) -> dict[str, str]:
    return json.loads(store.read_text()) if store.exists() else {}


def _save(store: Path, env: dict[str, str]) -> None:
    tmp = store.with_suffix(".tmp")
    tmp.write_text(json.dumps(env, sort_keys=True))
    os.replace(tmp, store)


def _apply(env: dict[str, str], name: str, value: str) -> None:
    if value:
        env[name] = value
    else:
        env.pop(name, None)


def main() -> int:
    store = Path(os.environ["FAKE_UBOOT_ENV"])
    env = _load(store)
    tool = Path(sys.argv[0]).name
    args = sys.argv[1:]
    if tool == "fw_printenv":
        bare = bool(args) and args[0] == "-n"
        names = args[1:] if bare else args
        missing = False
        for name in names or sorted(env):
            if name not in env:
                print(f'## Error: "{name}" not defined', file=sys.stderr)
                missing = True
                continue
            print(env[name] if bare else f"{name}={env[name]}")
        return 1 if missing else 0
    if args and args[0] in ("-s", "--script"):
        for line in Path(args[1]).read_text().splitlines():
            name, _, value = line.strip().partition(" ")
            if name and not name.startswith("#"):
                _apply(env, name, value.strip())
    elif args:
        _apply(env, args[0], " ".join(args[1:]))
    _save(store, env)
    return 0


def install(bin_dir: Path) -> None:
    """Put `fw_printenv` and `fw_setenv` into `bin_dir` (prepend it to PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("fw_printenv", "fw_setenv"):
        path = bin_dir / tool
        path.write_text(f"#!{sys.executable}\n" + Path(__file__).read_text())
        path.chmod(0o755)


def bootloader(store: Path) -> str:
    """What the U-Boot boot script in docs/device-integrator.md decides; returns the slot it
    boots."""
    env = _load(store)
    active = env.get("ota_active", "A")
    trial = env.get("ota_trial")
    if trial:
        tries = int(env.get("ota_tries", "0"))
        if tries > 0:
            env["ota_tries"] = str(tries - 1)
            _save(store, env)
            return trial
        del env["ota_trial"]
        _save(store, env)
    return active


if __name__ == "__main__":
    sys.exit(main())
