"""SoftHSM2 for PKCS#11 tests: a private token folder, tokens selected by label, ECDSA P-256 keys
generated on the token with python-pkcs11.

Everything that loads the PKCS#11 module runs in a subprocess (the CLI, or the key generator
below): SoftHSM reads its configuration once per process, and python-pkcs11 caches the module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
SO_PIN = "so-secret-1234"

_KEYGEN = textwrap.dedent(
    """
    import sys, pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util import biginteger
    from pkcs11.util.ec import encode_named_curve_parameters
    module, label, pin, keyid = sys.argv[1], sys.argv[2], sys.stdin.read(), int(sys.argv[3])
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(rw=True, user_pin=pin) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True)
        params.generate_keypair(store=True, id=biginteger(keyid), label=f"{label}-{keyid}")
    """
)


def find_module() -> str | None:
    return next((m for m in MODULE_CANDIDATES if Path(m).exists()), None)


@dataclass
class SoftHSM:
    root: Path
    module: str

    @property
    def conf(self) -> Path:
        return self.root / "softhsm2.conf"

    def env(self, pin_file: Path | None = None) -> dict[str, str]:
        """What a process needs to reach the tokens: module, config, and a PIN file."""
        env = {"PYKCS11LIB": self.module, "SOFTHSM2_CONF": str(self.conf)}
        if pin_file is not None:
            env["OTA_HSM_PIN_FILE"] = str(pin_file)
        return env

    def init_token(self, label: str, pin: str) -> None:
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                SO_PIN,
            ],
            env={**os.environ, **self.env()},
            check=True,
            capture_output=True,
            timeout=60,
        )

    def generate_key(self, label: str, pin: str, hsm_keyid: int = 2) -> None:
        """An ECDSA P-256 key pair on token `label`, with CKA_ID `hsm_keyid` (PIN on stdin)."""
        subprocess.run(
            [sys.executable, "-c", _KEYGEN, self.module, label, str(hsm_keyid)],
            input=pin,
            env={**os.environ, **self.env()},
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def token(self, label: str, pin: str, hsm_keyid: int = 2) -> str:
        """Init a token with one key; return its signer URI."""
        self.init_token(label, pin)
        self.generate_key(label, pin, hsm_keyid)
        return f"hsm:{hsm_keyid}?label={label}"


def softhsm(tmp_path: Path) -> SoftHSM:
    """A SoftHSM2 with its own, owner-only token folder below `tmp_path` (skips if absent)."""
    module = find_module()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("softhsm2 is not installed (make system-deps installs it)")
    root = tmp_path / "softhsm"
    tokens = root / "tokens"
    tokens.mkdir(parents=True, mode=0o700)
    hsm = SoftHSM(root, module)
    hsm.conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    return hsm
