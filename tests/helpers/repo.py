"""Building and inspecting repositories in tests, through the library or the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PASSPHRASE = "correct horse battery staple"
BIN = Path(sys.executable).parent


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: the dev passphrase comes from a variable, never argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env["OTA_KEY_PASSPHRASE"] = PASSPHRASE
    env.update(extra)
    return env


def ota_repo(
    repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real `ota-repo` console script as a subprocess."""
    proc = subprocess.run(
        [str(BIN / "ota-repo"), "--repo", str(repo), *args],
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ota-repo {' '.join(args)} failed: {proc.stderr}")
    return proc


def content_hash(repo: Path, ref: str, *extra: str, env: dict[str, str] | None = None) -> str:
    """The content hash `ota-repo request show` prints: what a holder reviews, then signs."""
    proc = ota_repo(repo, "request", "show", ref, "--json", *extra, env=env)
    return str(json.loads(proc.stdout)["content_hash"])


def sign_request(
    repo: Path,
    ref: str,
    uri: str,
    *extra: str,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Sign as docs/security-team.md says: review the request, then sign the hash reviewed.

    `extra` goes to both commands (e.g. `--trusted-root FILE` on a holder's machine).
    """
    digest = content_hash(repo, ref, *extra, env=env)
    return ota_repo(
        repo, "sign", ref, "--key", uri, "--expect", digest, *extra, env=env, check=check
    )


def assert_encrypted_pem(path: Path, passphrase: str = PASSPHRASE) -> None:
    """The file is a PEM private key that loads only with its passphrase."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = path.read_bytes()
    try:
        load_pem_private_key(data, password=None)
    except TypeError as e:  # cryptography's answer for an encrypted key without a password
        assert "encrypted" in str(e), e
    else:
        raise AssertionError(f"{path} is a private key stored in the clear")
    load_pem_private_key(data, password=passphrase.encode())


def tree_digest(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file below `folders`: compare before/after to prove nothing changed."""
    result = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                result[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def published(repo: Path) -> dict[str, str]:
    return tree_digest(repo / "metadata", repo / "targets")


def firmware_custom(version: str, hwid: str = "model-x", counter: int = 0) -> dict[str, Any]:
    return {"firmware": {"version": version, "hardware_ids": [hwid], "security_counter": counter}}


def custom_json(version: str, hwid: str = "model-x", counter: int = 0) -> str:
    return json.dumps(firmware_custom(version, hwid, counter))


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A refusal is one clear line on stderr, a non-zero exit, and never a traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
