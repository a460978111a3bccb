"""PKCS#11 hardware keys through securesystemslib's HSMSigner, on SoftHSM2 tokens created here:
a root key holder and a publisher sign with tokens; a wrong PIN, a missing token or an unknown
module is one line, signs nothing and publishes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from repository import keys
from tests.helpers.repo import (
    BIN,
    PASSPHRASE,
    assert_one_line_error,
    cli_env,
    ota_repo,
    published,
    sign_request,
)
from tests.helpers.softhsm import SoftHSM, softhsm

ALICE_PIN = "alice-pin-0000"
PUB_PIN = "publisher-pin-1111"


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, object]:
    """Alice holds her root key on a token; bob and carol on files; a publisher on a token."""
    hsm = softhsm(tmp_path)
    alice_uri = hsm.token("alice", ALICE_PIN)
    publisher_uri = hsm.token("publisher", PUB_PIN)
    k = tmp_path / "keys"
    for name in ("bob", "carol", "dave", "release", "snapshot", "timestamp"):
        keys.generate_key(k, name, passphrase=PASSPHRASE)
    pins = tmp_path / "pins"
    pins.mkdir(mode=0o700)
    for name, pin in (("alice", ALICE_PIN), ("publisher", PUB_PIN), ("wrong", "0000")):
        (pins / name).write_text(pin + "\n")
        (pins / name).chmod(0o600)  # a PIN file others can read is refused
    return {"hsm": hsm, "alice": alice_uri, "publisher": publisher_uri, "keys": k, "pins": pins}


def _env(lab: dict[str, object], pin: str, **extra: str) -> dict[str, str]:
    hsm = lab["hsm"]
    assert isinstance(hsm, SoftHSM)
    return cli_env(**{**hsm.env(Path(str(lab["pins"])) / pin), **extra})


def _production_with_alice_on_token(lab: dict[str, object], repo: Path) -> None:
    k = Path(str(lab["keys"]))
    env = _env(lab, "alice")
    out = ota_repo(
        repo, "key", "import-hsm", "alice", "--token-label", "alice", "--out", str(k), "--json",
        env=env,
    )  # fmt: skip
    assert json.loads(out.stdout)["uri"] == lab["alice"]
    ota_repo(
        repo, "init",
        "--root-key", str(k / "alice.pub"), "--root-key", str(k / "bob.pub"),
        "--root-key", str(k / "carol.pub"), "--root-threshold", "2",
        "--targets-key", str(k / "release.pub"),
        "--snapshot-key", str(k / "snapshot.pub"), "--snapshot-uri", f"encfile:{k}/snapshot.key",
        "--timestamp-key", str(k / "timestamp.pub"),
        "--timestamp-uri", f"encfile:{k}/timestamp.key",
        "--sign-with", str(lab["alice"]), "--sign-with", f"encfile:{k}/bob.key",
        "--sign-with", f"encfile:{k}/release.key",
        env=env,
    )  # fmt: skip


def test_root_holder_signs_with_a_token(lab: dict[str, object], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    k = Path(str(lab["keys"]))
    _production_with_alice_on_token(lab, repo)
    root = json.loads((repo / "metadata" / "1.root.json").read_text())
    alice_keyid = keys.public_key_from_file(k / "alice.pub").keyid
    assert alice_keyid in {s["keyid"] for s in root["signatures"]}
    assert root["signed"]["keys"][alice_keyid]["scheme"] == "ecdsa-sha2-nistp256"

    ota_repo(repo, "rotate", "root", "--add-key", str(k / "dave.pub"))
    (req,) = json.loads(ota_repo(repo, "requests", "--json").stdout)["requests"]
    sign_request(repo, req["id"], str(lab["alice"]), env=_env(lab, "alice"))
    for name in ("carol", "dave"):
        sign_request(repo, req["id"], f"encfile:{k}/{name}.key")
    ota_repo(repo, "publish", req["id"])
    ota_repo(repo, "verify")
    listed = json.loads(ota_repo(repo, "key", "list", "--json").stdout)["keys"]
    assert {r["keyid"] for r in listed if "root" in r["roles"]} >= {alice_keyid}


def test_publisher_signs_with_a_token(lab: dict[str, object], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    env = _env(lab, "publisher")
    ota_repo(
        repo, "key", "import-hsm", "publisher", "--token-label", "publisher",
        "--out", str(tmp_path), env=env,
    )  # fmt: skip
    ota_repo(
        repo, "delegate", "firmware-model-x", "--paths", "firmware/model-x/*",
        "--key", str(tmp_path / "publisher.pub"), "--sign-with", str(lab["publisher"]),
        "--publish", env=env,
    )  # fmt: skip
    image = tmp_path / "fw.bin"
    image.write_bytes(b"firmware" * 1000)
    proc = subprocess.run(
        [
            str(BIN / "ota-publish"),
            "add",
            str(image),
            "--hwid",
            "model-x",
            "--version",
            "2.0.0",
            "--role",
            "firmware-model-x",
            "--key",
            str(lab["publisher"]),
            "--repo",
            str(repo),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    ota_repo(repo, "verify")
    assert "2.0.0" in (repo / "metadata" / "2.firmware-model-x.json").read_text()


@pytest.mark.parametrize(
    "pin,extra,uri,message",
    [
        ("wrong", {}, "hsm:2?label=alice", "wrong PIN for hsm:2?label=alice"),
        ("alice", {}, "hsm:2?label=no-such-token", "no token for hsm:2?label=no-such-token"),
        ("alice", {"PYKCS11LIB": ""}, "hsm:2?label=alice", "set PYKCS11LIB"),
        ("alice", {}, "hsm:7?label=alice", "no ECDSA key with that id"),
    ],
    ids=["wrong-pin", "token-missing", "module-unknown", "no-such-key"],
)
def test_token_problems_sign_nothing(
    lab: dict[str, object],
    tmp_path: Path,
    pin: str,
    extra: dict[str, str],
    uri: str,
    message: str,
) -> None:
    repo = tmp_path / "repo"
    k = Path(str(lab["keys"]))
    _production_with_alice_on_token(lab, repo)
    ota_repo(repo, "rotate", "root", "--add-key", str(k / "dave.pub"))
    (req,) = json.loads(ota_repo(repo, "requests", "--json").stdout)["requests"]
    staged = (repo / ".ota" / "staging" / f"{req['id']}.json").read_bytes()
    before = published(repo)
    proc = sign_request(repo, req["id"], uri, env=_env(lab, pin, **extra), check=False)
    assert_one_line_error(proc, message)
    assert (repo / ".ota" / "staging" / f"{req['id']}.json").read_bytes() == staged
    assert published(repo) == before
