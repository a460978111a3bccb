"""`ota-publish add` refuses bad input with one line and a non-zero exit; nothing is published."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.repo import BIN, assert_one_line_error, cli_env, ota_repo, published

ROLE = "firmware-model-x"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("publish-template")
    repo = base / "repo"
    keys_dir = base / "keys"
    ota_repo(repo, "init", "--dev")
    ota_repo(repo, "key", "generate", "pub-x", "--out", str(keys_dir))
    ota_repo(repo, "key", "generate", "other", "--out", str(keys_dir))
    ota_repo(
        repo, "delegate", ROLE, "--paths", "firmware/model-x/*",
        "--key", str(keys_dir / "pub-x.pub"), "--sign-with", f"encfile:{keys_dir / 'pub-x.key'}",
        "--publish",
    )  # fmt: skip
    first = base / "fw-0.9.0.bin"
    first.write_bytes(b"the first image")
    proc = subprocess.run(
        [
            str(BIN / "ota-publish"), "add", str(first), "--hwid", "model-x", "--version", "0.9.0",
            "--role", ROLE, "--key", f"encfile:{keys_dir / 'pub-x.key'}", "--repo", str(repo),
        ],
        env=cli_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return repo, keys_dir


@pytest.fixture
def setup(template: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the template repository per test."""
    repo = tmp_path / "repo"
    shutil.copytree(template[0], repo)
    (tmp_path / "fw.bin").write_bytes(b"firmware" * 100)
    return repo, template[1]


CASES = [
    (["--version", "1.x"], "not dotted integers"),
    (["--version", "1.0.0", "--hwid", "../model-x"], "bad hardware id"),
    (["--version", "1.0.0", "--file", "missing.bin"], "file not found"),
    (["--version", "1.0.0", "--role", "firmware-model-z"], "unknown role 'firmware-model-z'"),
    (["--version", "1.0.0", "--key", "other"], "is not one of this role's keys"),
    (["--version", "1.0.0", "--hwid", "model-y"], "outside firmware-model-x's delegation"),
    (["--version", "1.0.0", "--delta-from", "1.0.0", "fw.bin"], "given twice or to itself"),
    (["--version", "1.0.0", "--security-counter", "-1"], "--security-counter"),
    (["--version", "1.0.0", "--passphrase-file", "wrong"], "wrong passphrase"),
    (["--version", "1.0.0", "--server", "https://127.0.0.1:1"], "exactly one of --repo"),
    (["--version", "0.9.0"], "is published already with other bytes"),
]


@pytest.mark.parametrize(
    "args,message",
    CASES,
    ids=[
        "bad-version",
        "bad-hwid",
        "missing-file",
        "unknown-role",
        "wrong-key",
        "outside-delegation",
        "delta-to-itself",
        "negative-counter",
        "wrong-passphrase",
        "repo-and-server",
        "version-republished",
    ],
)
def test_bad_input(setup: tuple[Path, Path], tmp_path: Path, args: list[str], message: str) -> None:
    repo, keys_dir = setup
    opts = {"--hwid": "model-x", "--role": ROLE, "--key": "pub-x", "--file": "fw.bin"}
    rest: list[str] = []
    env = cli_env()
    it = iter(args)
    for a in it:
        if a in opts:
            opts[a] = next(it)
        elif a == "--passphrase-file":
            secret = tmp_path / next(it)
            secret.write_text("not it\n")
            secret.chmod(0o600)
            del env["OTA_KEY_PASSPHRASE"]
            env["OTA_KEY_PASSPHRASE_FILE"] = str(secret)
        else:
            rest.append(a)
    argv = [
        str(BIN / "ota-publish"), "add", str(tmp_path / opts["--file"]),
        "--hwid", opts["--hwid"], "--role", opts["--role"],
        "--key", f"encfile:{keys_dir / opts['--key']}.key", "--repo", str(repo), *rest,
    ]  # fmt: skip
    before = published(repo)
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert_one_line_error(proc, message)
    assert published(repo) == before


def _loose_token(tmp: Path) -> Path:
    token = tmp / "upload.token"
    token.write_text("secret-token\n")
    token.chmod(0o644)
    return token


def _fifo(tmp: Path) -> Path:
    fifo = tmp / "fifo"
    os.mkfifo(fifo, 0o600)
    return fifo


SERVER_CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "root-dev-zero": (
        lambda _t: ["--root", "/dev/zero"],
        "trusted root /dev/zero is not a regular",
    ),
    "root-fifo": (lambda t: ["--root", str(_fifo(t))], "is not a regular file"),
    "token-fifo": (lambda t: ["--token-file", str(_fifo(t))], "is not a regular file"),
    "token-loose": (lambda t: ["--token-file", str(_loose_token(t))], "chmod 600"),
}


@pytest.mark.parametrize("case", list(SERVER_CASES), ids=list(SERVER_CASES))
def test_server_inputs_are_bounded_private_files(
    template: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    """`--server`'s root and token are read like every other secret: never a hang, never loose."""
    keys_dir = template[1]
    make, message = SERVER_CASES[case]
    extra = make(tmp_path)
    if "--root" not in extra:
        extra += ["--root", str(template[0] / "metadata" / "1.root.json")]
    (tmp_path / "fw.bin").write_bytes(b"firmware" * 100)
    proc = subprocess.run(
        [
            str(BIN / "ota-publish"), "add", str(tmp_path / "fw.bin"), "--hwid", "model-x",
            "--version", "1.0.0", "--role", ROLE, "--key", f"encfile:{keys_dir / 'pub-x.key'}",
            "--server", "https://127.0.0.1:1", *extra,
        ],
        env=cli_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert_one_line_error(proc, message)
    assert "secret-token" not in proc.stderr
