"""What `ota-repo` reads by a path a user gives (passphrase files, key files, `.pub` files, the
trusted root) is refused in one line unless it is a regular file of a bounded size; private keys,
passphrase files and `.ota/` that others can read are refused with the exact `chmod`; new key
files are encrypted with scrypt, old ones still load, and `ota-repo key reencrypt` upgrades one.

Every case drives the real `ota-repo` console script as a subprocess."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.helpers.repo import (
    BIN,
    PASSPHRASE,
    assert_encrypted_pem,
    assert_one_line_error,
    cli_env,
    custom_json,
    ota_repo,
    published,
)

_MEMORY_CAP = 2 * 1024**3  # an unbounded read of /dev/zero ends here instead of the machine


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))


def _run(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`ota-repo` with its memory capped and a bound on time: a hang or a runaway read fails."""
    return subprocess.run(
        [str(BIN / "ota-repo"), "--repo", str(repo), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        preexec_fn=_capped,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("template") / "repo"
    ota_repo(repo, "init", "--dev")
    return repo


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of one `init --dev` repository (modes kept): key generation costs scrypt."""
    return Path(shutil.copytree(template, tmp_path / "repo", symlinks=True))


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    return path


def _huge(tmp_path: Path) -> Path:
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    path.chmod(0o600)
    return path


_SOURCES: dict[str, Callable[[Path], Path]] = {
    "dev-zero": lambda _tmp: Path("/dev/zero"),
    "fifo": _fifo,
    "directory": lambda tmp: tmp,
    "64-MiB-file": _huge,
}
_WHY = {
    "dev-zero": "not a regular file",
    "fifo": "not a regular file",
    "directory": "not a regular file",
    "64-MiB-file": "larger than",
}


@pytest.mark.parametrize("source", list(_SOURCES), ids=list(_SOURCES))
def test_passphrase_file_that_is_no_small_regular_file_is_refused(
    repo: Path, tmp_path: Path, source: str
) -> None:
    env = cli_env(OTA_KEY_PASSPHRASE_FILE=str(_SOURCES[source](tmp_path)))
    del env["OTA_KEY_PASSPHRASE"]
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"firmware" * 100)
    before = published(repo)
    proc = _run(
        repo, "add-target", str(fw), "--path", "firmware/model-x/fw.bin", "--custom",
        custom_json("1.0.0"), env=env,
    )  # fmt: skip
    assert_one_line_error(proc, "passphrase file", _WHY[source])
    assert published(repo) == before


@pytest.mark.parametrize("source", list(_SOURCES), ids=list(_SOURCES))
def test_key_file_that_is_no_small_regular_file_is_refused(
    repo: Path, tmp_path: Path, source: str
) -> None:
    """The signer URI `encfile:keys/targets.key` of the config names a link to the source."""
    key = repo / ".ota" / "keys" / "targets.key"
    key.unlink()
    key.symlink_to(_SOURCES[source](tmp_path))
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"firmware" * 100)
    before = published(repo)
    proc = _run(
        repo, "add-target", str(fw), "--path", "firmware/model-x/fw.bin", "--custom",
        custom_json("1.0.0"), env=cli_env(),
    )  # fmt: skip
    assert_one_line_error(proc, "private key file", _WHY[source])
    assert published(repo) == before


@pytest.mark.parametrize("source", list(_SOURCES), ids=list(_SOURCES))
def test_public_key_file_that_is_no_small_regular_file_is_refused(
    repo: Path, tmp_path: Path, source: str
) -> None:
    before = published(repo)
    proc = _run(
        repo, "delegate", "model-x", "--paths", "firmware/model-x/*", "--key",
        str(_SOURCES[source](tmp_path)), env=cli_env(),
    )  # fmt: skip
    if source == "directory":  # the option's own check comes first
        assert_one_line_error(proc, "is a directory")
    else:
        assert_one_line_error(proc, "public key file", _WHY[source])
    assert published(repo) == before


@pytest.mark.parametrize("source", list(_SOURCES), ids=list(_SOURCES))
def test_trusted_root_that_is_no_small_regular_file_is_refused(
    repo: Path, tmp_path: Path, source: str
) -> None:
    proc = _run(repo, "verify", "--root", str(_SOURCES[source](tmp_path)), env=cli_env())
    assert_one_line_error(proc, "trusted root", _WHY[source])


# -- loose secrets ------------------------------------------------------------------------------


def _add_target(
    repo: Path, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"firmware" * 100)
    return _run(
        repo, "add-target", str(fw), "--path", "firmware/model-x/fw.bin", "--custom",
        custom_json("1.0.0"), env=env,
    )  # fmt: skip


def test_private_key_file_readable_by_others_is_refused_with_the_chmod(
    repo: Path, tmp_path: Path
) -> None:
    key = repo / ".ota" / "keys" / "targets.key"
    key.chmod(0o644)
    before = published(repo)
    proc = _add_target(repo, tmp_path, cli_env())
    assert_one_line_error(proc, f"chmod 600 {key}")
    assert published(repo) == before
    key.chmod(0o600)
    assert _add_target(repo, tmp_path, cli_env()).returncode == 0


def test_private_folder_open_to_others_is_refused_with_the_chmod(
    repo: Path, tmp_path: Path
) -> None:
    private = repo / ".ota"
    private.chmod(0o755)
    before = published(repo)
    proc = _add_target(repo, tmp_path, cli_env())
    assert_one_line_error(proc, f"chmod 700 {private.resolve()}")
    assert published(repo) == before


def test_passphrase_file_readable_by_others_is_refused_with_the_chmod(
    repo: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o644)
    env = cli_env(OTA_KEY_PASSPHRASE_FILE=str(secret))
    del env["OTA_KEY_PASSPHRASE"]
    before = published(repo)
    proc = _add_target(repo, tmp_path, env)
    assert_one_line_error(proc, f"chmod 600 {secret}")
    assert published(repo) == before
    secret.chmod(0o600)
    assert _add_target(repo, tmp_path, env).returncode == 0


def test_key_generate_writes_owner_only_files_that_ota_repo_accepts(tmp_path: Path) -> None:
    out = tmp_path / "alice"
    ota_repo(tmp_path, "key", "generate", "alice", "--out", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "alice.key").stat().st_mode) == 0o600
    ota_repo(tmp_path, "key", "reencrypt", str(out / "alice.key"))  # opens it: no refusal


# -- the key derivation function of key files ---------------------------------------------------


def _scrypt_params(path: Path) -> tuple[int, int, int]:
    """(N, r, p) of a PBES2/scrypt PKCS#8 key file (RFC 8018, RFC 7914 section 7), read with
    asn1crypto's generic DER parser (no knowledge of this project's code)."""
    from asn1crypto import core, pem  # type: ignore[import-untyped]

    _, _, der = pem.unarmor(path.read_bytes())
    algorithm = core.load(der).native["0"]
    assert algorithm["0"] == "1.2.840.113549.1.5.13", "not PBES2"
    kdf, scheme = algorithm["1"]["0"], algorithm["1"]["1"]
    assert kdf["0"] == "1.3.6.1.4.1.11591.4.11", "not scrypt"
    assert scheme["0"] == "2.16.840.1.101.3.4.1.42"  # AES-256-CBC
    params = kdf["1"]
    assert len(params["0"]) >= 16  # salt
    return params["1"], params["2"], params["3"]


def _assert_owasp_scrypt(path: Path) -> None:
    n, r, p = _scrypt_params(path)
    # OWASP's scrypt floor: N=2^17, r=8, p=1, or an equivalent (2^16/2, 2^15/3, 2^14/5, 2^13/10)
    assert r >= 8
    assert (n, p) in {(2**17, 1), (2**16, 2), (2**15, 3), (2**14, 5), (2**13, 10)} or (
        n >= 2**17
    ), (n, r, p)


def test_new_key_file_is_encrypted_with_scrypt(tmp_path: Path) -> None:
    ota_repo(tmp_path, "key", "generate", "alice", "--out", str(tmp_path / "alice"))
    key = tmp_path / "alice" / "alice.key"
    _assert_owasp_scrypt(key)
    assert_encrypted_pem(key)


def test_dev_repository_keys_are_encrypted_with_scrypt(repo: Path) -> None:
    for key in (repo / ".ota" / "keys").glob("*.key"):
        _assert_owasp_scrypt(key)


def _legacy_key(path: Path, passphrase: str) -> ed25519.Ed25519PrivateKey:
    """A key file as earlier versions wrote it: PKCS#8 with PBKDF2 at 2,048 iterations."""
    private = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )
    )
    path.chmod(0o600)
    return private


def test_reencrypt_upgrades_an_old_key_file_to_scrypt(tmp_path: Path) -> None:
    key = tmp_path / "old.key"
    private = _legacy_key(key, PASSPHRASE)
    with pytest.raises(AssertionError, match="not scrypt"):
        _scrypt_params(key)
    proc = ota_repo(tmp_path, "key", "reencrypt", str(key))
    assert "scrypt" in proc.stdout
    _assert_owasp_scrypt(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = serialization.load_pem_private_key(key.read_bytes(), PASSPHRASE.encode())
    assert loaded.public_key().public_bytes_raw() == private.public_key().public_bytes_raw()  # type: ignore[union-attr]


def test_reencrypt_can_change_the_passphrase_read_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "old.key"
    _legacy_key(key, PASSPHRASE)
    new = tmp_path / "new-passphrase"
    new.write_text("a brand new long passphrase\n")
    new.chmod(0o600)
    ota_repo(
        tmp_path, "key", "reencrypt", str(key), env=cli_env(OTA_NEW_KEY_PASSPHRASE_FILE=str(new))
    )
    assert_encrypted_pem(key, "a brand new long passphrase")
    _assert_owasp_scrypt(key)


def test_reencrypt_with_a_wrong_passphrase_changes_nothing(tmp_path: Path) -> None:
    key = tmp_path / "old.key"
    _legacy_key(key, PASSPHRASE)
    before = key.read_bytes()
    proc = ota_repo(
        tmp_path, "key", "reencrypt", str(key), env=cli_env(OTA_KEY_PASSPHRASE="wrong"), check=False
    )
    assert_one_line_error(proc, "wrong passphrase")
    assert key.read_bytes() == before


@pytest.mark.parametrize("source", list(_SOURCES), ids=list(_SOURCES))
@pytest.mark.parametrize(
    ("name", "args"),
    [("config.json", ["status"]), ("devices.json", ["device", "list"])],
    ids=["config", "device-registry"],
)
def test_repository_files_that_are_no_small_regular_file_are_refused(
    repo: Path, tmp_path: Path, source: str, name: str, args: list[str]
) -> None:
    """A planted FIFO, device or huge file in `.ota/` never hangs or exhausts `ota-repo`."""
    private = repo / ".ota" / name
    private.unlink(missing_ok=True)
    private.symlink_to(_SOURCES[source](tmp_path))
    proc = _run(repo, *args, env=cli_env())
    assert_one_line_error(proc, name)
