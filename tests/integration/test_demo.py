"""README's first command: the demo runs end to end (repository, gunicorn over TLS, device)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.repo import cli_env

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_demo_updates_a_device_and_rolls_back_a_broken_image(tmp_path: Path) -> None:
    env = cli_env()
    del env["OTA_KEY_PASSPHRASE"]  # the demo makes its own passphrase files
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--workdir", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out = proc.stdout
    assert "booted slot B: 1.1.0 (committed after a passing health check)" in out
    assert "booted slot B: 1.1.0 (rolled back: health check exited 1)" in out
    assert "ok: 5 roles and 3 targets verified" in out
    assert "dev-0001: rolled-back: health check exited 1" in out
