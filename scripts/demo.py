#!/usr/bin/env python3
"""secure-ota end to end, on embedded defaults, with the real commands (`make demo`).

1. The security team creates a repository (dev keys: a demo) and delegates hardware model
   `model-x` to a publisher's key.
2. The operator starts the update server (gunicorn over TLS on 127.0.0.1) and registers a device.
3. The publisher uploads firmware 1.0.0 and 1.1.0, signed with the publisher's key.
4. A device provisioned with root v1 and factory image 1.0.0 updates to 1.1.0 over HTTPS,
   boots it, passes its health check and commits.
5. The publisher uploads 1.2.0, which fails the device's health check: the device falls back to
   1.1.0 by itself and reports why.
6. Every log checks out: the device's event log, the repository's audit log, `ota-repo verify`.

Usage: scripts/demo.py [--workdir DIR] (default: a new temporary folder, kept for a look)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HWID = "model-x"
ROLE = f"firmware-{HWID}"
IMAGE_SIZE = 1024 * 1024  # a small embedded image

HEALTH_CHECK = """#!/bin/sh
# The demo's health check: an image whose first bytes say BAD! never comes up properly.
head -c 4 "$OTA_SLOT_PATH" | grep -q 'BAD!' && exit 1
exit 0
"""


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


_WORK = {"dir": ""}  # shown as $DEMO in the commands printed


def shown(text: str) -> str:
    return text.replace(_WORK["dir"], "$DEMO") if _WORK["dir"] else text


def run(*args: str | Path, env: dict[str, str], show: bool = True) -> str:
    argv = [str(a) for a in args]
    if show:
        line = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
        print(shown(f"$ {line}"))
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        sys.exit(f"demo failed: {' '.join(argv)}\n{proc.stderr.strip()}")
    if show and proc.stdout.strip():
        print(shown(proc.stdout.rstrip()))
    return proc.stdout


def secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def image(version: str, *, healthy: bool = True) -> bytes:
    head = (b"GOOD" if healthy else b"BAD!") + f" model-x firmware {version}\n".encode()
    return head + os.urandom(IMAGE_SIZE - len(head))


def make_tls(folder: Path, env: dict[str, str]) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 (an operator uses their own PKI)."""
    folder.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(
        "openssl",
        "req",
        "-x509",
        *ec,
        "-keyout",
        folder / "ca.key",
        "-out",
        folder / "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=secure-ota demo CA",
        env=env,
        show=False,
    )
    run(
        "openssl",
        "req",
        *ec,
        "-keyout",
        folder / "server.key",
        "-out",
        folder / "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        env=env,
        show=False,
    )
    ext = folder / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        folder / "server.csr",
        "-CA",
        folder / "ca.pem",
        "-CAkey",
        folder / "ca.key",
        "-CAcreateserial",
        "-out",
        folder / "server.pem",
        "-days",
        "2",
        "-extfile",
        ext,
        env=env,
        show=False,
    )
    for key in folder.glob("*.key"):
        key.chmod(0o600)


def start_server(
    repo: Path, tls: Path, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    server_env = {
        **env,
        "OTA_REPO": str(repo),
        "OTA_BIND": "127.0.0.1:0",
        "OTA_TLS_CERT": str(tls / "server.pem"),
        "OTA_TLS_KEY": str(tls / "server.key"),
        "OTA_WORKERS": "2",
    }
    print("$ gunicorn -c python:repository.server.gunicorn_conf 'repository.server:create_app()'")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "-c",
                "python:repository.server.gunicorn_conf",
                "repository.server:create_app()",
            ],
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"Listening at: https://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return proc, f"https://127.0.0.1:{m.group(1)}"
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop_server(proc)
    sys.exit(f"demo failed: the server did not start\n{log.read_text(errors='replace')}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def device_config(device: Path, url: str, tls: Path) -> Path:
    etc = device / "etc"
    config = etc / "ota-client.toml"
    config.write_text(f"""\
device_id = "dev-0001"
hardware_id = "{HWID}"
data_dir = "{device / "data"}"
trusted_root = "root.json"

[server]
metadata_url = "{url}/metadata/"
targets_url = "{url}/targets/"
reports_url = "{url}/api/v1/reports"
ca_bundle = "{tls / "ca.pem"}"
token_file = "token"

[slots]
A = "{device / "slot-a.img"}"
B = "{device / "slot-b.img"}"

[boot]
max_tries = 2
health_check = ["{etc / "health-check"}"]
""")
    return config


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--workdir", type=Path, help="folder for everything the demo makes (must not exist)"
    )
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="secure-ota-demo-"))
    work.mkdir(parents=True, exist_ok=args.workdir is None)
    work.chmod(0o700)
    _WORK["dir"] = str(work)
    print(f"DEMO={work}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    ota_repo, ota_publish, ota_client = BIN / "ota-repo", BIN / "ota-publish", BIN / "ota-client"
    # Passphrases live in owner-only files named by the environment, never on a command line.
    team = {
        **env,
        "OTA_KEY_PASSPHRASE_FILE": str(secret_file(work / "team.pass", secrets.token_hex(16))),
    }
    publisher = {
        **env,
        "OTA_KEY_PASSPHRASE_FILE": str(secret_file(work / "publisher.pass", secrets.token_hex(16))),
    }
    repo = work / "repo"

    say("1. security team: create the repository and delegate model-x to a publisher")
    run(ota_repo, "--repo", repo, "init", "--dev", env=team)
    (work / "publisher").mkdir()
    run(ota_repo, "key", "generate", ROLE, "--out", work / "publisher", env=publisher)
    request = work / "delegate-model-x.json"
    run(
        ota_repo,
        "--repo",
        repo,
        "delegate",
        ROLE,
        "--paths",
        f"firmware/{HWID}/*",
        "--key",
        work / "publisher" / f"{ROLE}.pub",
        "--export",
        request,
        env=team,
    )
    # The publisher reviews the request against their pinned copy of root v1, then signs the
    # role's first, empty version (proof they hold the key) with the content hash reviewed.
    pinned = work / "publisher" / "trusted-root.json"
    shutil.copy(repo / "metadata" / "1.root.json", pinned)
    trusted = ("--trusted-root", pinned)
    review = run(ota_repo, "request", "show", request, *trusted, env=publisher)
    digest = re.search(r"^content hash: ([0-9a-f]{64})$", review, re.M)
    assert digest is not None, review
    run(
        ota_repo,
        "sign",
        request,
        "--key",
        f"encfile:{work / 'publisher' / f'{ROLE}.key'}",
        "--expect",
        digest.group(1),
        *trusted,
        env=publisher,
    )
    run(ota_repo, "--repo", repo, "publish", request, env=team)

    say("2. operator: TLS, the update server under gunicorn, one registered device")
    tls = work / "tls"
    make_tls(tls, env)
    server, url = start_server(repo, tls, team, work / "server.log")
    try:
        print(shown(f"serving {repo} at {url}"))
        device = work / "device"
        (device / "etc").mkdir(parents=True)
        token = run(
            ota_repo,
            "--repo",
            repo,
            "device",
            "add",
            "dev-0001",
            "--hwid",
            HWID,
            env=team,
            show=False,
        ).strip()
        print("$ ota-repo device add dev-0001 --hwid model-x > device/etc/token")
        print("  (a token is printed once; the server stores only its hash)")
        secret_file(device / "etc" / "token", token)
        upload_token = run(
            ota_repo,
            "--repo",
            repo,
            "upload-token",
            "add",
            "ci-model-x",
            "--role",
            ROLE,
            env=team,
            show=False,
        ).strip()
        print("$ ota-repo upload-token add ci-model-x --role firmware-model-x > upload.token")
        token_file = secret_file(work / "publisher" / "upload.token", upload_token)
        publish_env = {**publisher}
        key = f"encfile:{work / 'publisher' / f'{ROLE}.key'}"
        build = work / "build"
        build.mkdir()

        def publish(version: str, *, healthy: bool = True) -> None:
            fw = build / f"fw-{version}.bin"
            fw.write_bytes(image(version, healthy=healthy))
            run(
                ota_publish,
                "add",
                fw,
                "--hwid",
                HWID,
                "--version",
                version,
                "--role",
                ROLE,
                "--key",
                key,
                "--server",
                url,
                "--root",
                repo / "metadata" / "1.root.json",
                "--ca-bundle",
                tls / "ca.pem",
                "--token-file",
                token_file,
                env=publish_env,
            )

        say("3. publisher: upload firmware 1.0.0 and 1.1.0, signed with the publisher's key")
        publish("1.0.0")
        publish("1.1.0")

        say("4. device: provisioned with root v1 and factory image 1.0.0; updates to 1.1.0")
        shutil.copy(repo / "metadata" / "1.root.json", device / "etc" / "root.json")
        health = device / "etc" / "health-check"
        health.write_text(HEALTH_CHECK)
        health.chmod(0o755)
        config = device_config(device, url, tls)
        shutil.copy(build / "fw-1.0.0.bin", device / "slot-a.img")
        client = (ota_client, "--config", config)
        run(
            *client,
            "provision",
            "--slot",
            "A",
            "--target",
            f"firmware/{HWID}/fw-1.0.0.bin",
            env=env,
        )
        run(*client, "check", env=env)
        run(*client, "update", env=env)
        run(*client, "boot", env=env)
        status = json.loads(run(*client, "--json", "status", env=env, show=False))
        assert status["installed_version"] == "1.1.0", status
        print(f"device runs {status['installed_version']} from slot {status['active_slot']}")

        say("5. publisher: 1.2.0 is broken; the device tries it, fails the check, falls back")
        publish("1.2.0", healthy=False)
        run(*client, "update", env=env)
        run(*client, "boot", env=env)
        status = json.loads(run(*client, "--json", "status", env=env, show=False))
        assert status["installed_version"] == "1.1.0", status
        print(f"device still runs {status['installed_version']} from slot {status['active_slot']}")

        say("6. every record checks out")
        run(*client, "log", "verify", env=env)
        run(ota_repo, "--repo", repo, "audit", "verify", env=team)
        run(ota_repo, "--repo", repo, "verify", env=team)
        print("reports the server received (from its audit log):")
        for line in (repo / ".ota" / "server-audit.log").read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "report":
                print(f"  {entry['device']}: {entry['result']}: {entry['reason']}")
    finally:
        stop_server(server)
    say(f"done: everything is in {work}")


if __name__ == "__main__":
    main()
