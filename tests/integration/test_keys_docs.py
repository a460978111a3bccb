"""Every ```sh block of docs/security-team.md, docs/runbooks/key-compromise.md and
docs/publisher.md, run in order with bash in the environment the docs describe: one folder per
person holding their passphrase file, no OTA_* variable set beforehand, the real console scripts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from tests.helpers.certs import make_tls
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.repo import BIN, PASSPHRASE, assert_one_line_error

DOCS = Path(__file__).resolve().parents[2] / "docs"
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "release", "server", "publisher")


def sh_blocks(doc: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", doc.read_text(), re.S | re.M)


def _environment(room: Path, people: tuple[str, ...]) -> dict[str, str]:
    for person in people:
        folder = room / person
        folder.mkdir(mode=0o700)
        secret = folder / "passphrase"
        # the security team's dev repository is the one the server fixture opens
        secret.write_text(PASSPHRASE if person == "security" else f"{person}'s long passphrase\n")
        secret.chmod(0o600)
    build = room / "build"
    build.mkdir()
    for name in ("fw-1.4.1.bin", "fw-1.4.2.bin", "fw-1.4.1-to-1.4.2.delta", "fw-2.0.0.bin"):
        (build / name).write_bytes(f"build output {name}".encode() * 50)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env["PATH"] = f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["HOME"] = str(room)
    return env


def run_doc(doc: Path, room: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    blocks = sh_blocks(doc)
    assert blocks, f"{doc} has no sh blocks"
    script = "set -euo pipefail\n" + "\n".join(blocks)
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=room,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{doc.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


def _root(repo: Path, version: int) -> Root:
    root = Metadata.from_bytes((repo / "metadata" / f"{version}.root.json").read_bytes()).signed
    assert isinstance(root, Root)
    return root


def _keyid(pub: Path) -> str:
    from repository.keys import public_key_from_file

    return public_key_from_file(pub).keyid


def test_security_team_guide_then_key_compromise_runbook(tmp_path: Path) -> None:
    env = _environment(tmp_path, PEOPLE)
    run_doc(DOCS / "security-team.md", tmp_path, env)
    repo = tmp_path / "server" / "repo"
    # The ceremony made root v1 (2 of alice, bob, carol); section 6 made v2 (3 of 4), section 7
    # v3 (the targets key replaced).
    v1, v2, v3 = _root(repo, 1), _root(repo, 2), _root(repo, 3)
    assert v1.roles["root"].threshold == 2 and len(v1.roles["root"].keyids) == 3
    assert v2.roles["root"].threshold == 3
    assert _keyid(tmp_path / "carol" / "carol.pub") not in v2.roles["root"].keyids
    assert v3.roles["targets"].keyids == [_keyid(tmp_path / "release" / "release-2.pub")]
    assert not (repo / "metadata" / "4.root.json").exists()
    assert not list((repo / ".ota" / "staging").glob("*.json"))  # every request published
    qa_root = _root(tmp_path / "server" / "qa-repo", 1)  # the all-in-the-room init
    assert qa_root.roles["root"].threshold == 2

    env["OTA_REPO"] = str(repo)
    run_doc(DOCS / "runbooks" / "key-compromise.md", tmp_path, env)
    # Root v4 replaced alice by frank, v5 the targets key, v6 the timestamp key, v7 snapshot's.
    assert _keyid(tmp_path / "alice" / "alice.pub") not in _root(repo, 4).keys
    assert _root(repo, 5).roles["targets"].keyids == [
        _keyid(tmp_path / "release" / "release-3.pub")
    ]
    v6 = _root(repo, 6)
    assert v6.roles["timestamp"].keyids == [
        _keyid(tmp_path / "server" / "keys" / "timestamp-2.pub")
    ]
    v7 = _root(repo, 7)
    assert v7.roles["snapshot"].keyids == [_keyid(tmp_path / "server" / "keys" / "snapshot-2.pub")]
    assert not (repo / "metadata" / "8.root.json").exists()
    # The revoked role (and so its keys, old and new) can no longer publish.
    proc = subprocess.run(
        [
            str(BIN / "ota-publish"), "add", "build/fw-2.0.0.bin", "--hwid", "model-x",
            "--version", "2.0.1", "--role", "firmware-model-x",
            "--key", "encfile:publisher/firmware-x.key", "--repo", str(repo),
        ],
        cwd=tmp_path,
        env={**env, "OTA_KEY_PASSPHRASE_FILE": "publisher/passphrase:server/passphrase"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert_one_line_error(proc, "unknown role 'firmware-model-x'")
    audit = [json.loads(line) for line in (repo / ".ota" / "audit.log").read_text().splitlines()]
    assert sum(1 for e in audit if e.get("action") == "publish-request") == 11


def test_publisher_guide(tmp_path: Path) -> None:
    env = _environment(tmp_path, ("publisher", "security"))
    subprocess.run(
        [str(BIN / "ota-repo"), "--repo", "repo", "init", "--dev"],
        cwd=tmp_path,
        env={**env, "OTA_KEY_PASSPHRASE_FILE": "security/passphrase"},
        check=True,
        capture_output=True,
    )
    tls = make_tls(tmp_path / "tls")
    shutil.copy(tls.ca_cert, tmp_path / "server-ca.pem")
    # the operator's step: an upload token for the publisher's role, handed over as a file
    add_token = ["upload-token", "add", "ci-model-x", "--role", "firmware-model-x"]
    token = subprocess.run(
        [str(BIN / "ota-repo"), "--repo", "repo", *add_token],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (tmp_path / "publisher" / "upload.token").write_text(token)
    with run_gunicorn(
        tmp_path / "repo",
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"device_auth": False},
    ) as server:
        run_doc(DOCS / "publisher.md", tmp_path, {**env, "OTA_SERVER": server.url})
    role = json.loads((tmp_path / "repo" / "metadata" / "3.firmware-model-x.json").read_text())
    uploaded = json.loads((tmp_path / "repo" / "metadata" / "4.firmware-model-x.json").read_text())
    assert "firmware/model-x/fw-2.0.0.bin" in uploaded["signed"]["targets"]
    targets = role["signed"]["targets"]
    assert targets["firmware/model-x/fw-1.4.2.bin"]["custom"] == {
        "firmware": {
            "version": "1.4.2",
            "hardware_ids": ["model-x"],
            "security_counter": 3,
            "deltas": {"1.4.1": "firmware/model-x/fw-1.4.1-to-1.4.2.delta"},
        }
    }


@pytest.mark.parametrize("doc", ["security-team.md", "publisher.md", "runbooks/key-compromise.md"])
def test_docs_pass_no_secret_on_a_command_line(doc: str) -> None:
    text = "\n".join(sh_blocks(DOCS / doc))
    assert "OTA_KEY_PASSPHRASE=" not in text and "--passphrase" not in text
    assert "OTA_HSM_PIN=" not in text
