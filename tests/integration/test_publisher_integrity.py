"""Publishers cannot change a published image, nor sign absurd counters or lifetimes, and
`ota-publish add` reads only regular files and publishes exactly the bytes it read.

Driven through the real `ota-publish` and `ota-repo` console scripts and, for the server, real
gunicorn over TLS with the publisher's own `upload_role`. Every refusal is one line, and the
published folders (and the audit log) stay byte for byte as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Targets

from repository.publisher.upload import UploadError, upload_role
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import GunicornServer, run_gunicorn
from tests.helpers.repo import (
    BIN,
    assert_one_line_error,
    cli_env,
    firmware_custom,
    ota_repo,
    published,
)
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

ROLE = "firmware-model-x"
FW1 = "firmware/model-x/fw-1.0.0.bin"
V1 = b"\x7fELF model-x 1.0.0" * 300


# -- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DelegatedRepo, GunicornServer, TlsFiles, Path]]:
    """model-x v1 lists fw-1.0.0 (uploaded), served by gunicorn over TLS."""
    tmp = tmp_path_factory.mktemp("integrity")
    tls = make_tls(tmp / "tls")
    repo = make_delegated_repo(tmp / "repo", ("model-x",))
    first, files = publisher_update(repo, "model-x", {FW1: V1}, tmp=tmp / "v1")
    with run_gunicorn(
        repo.root,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"upload_tokens": False},
    ) as server:
        upload_role(server.url, "model-x", first, files, ca_bundle=tls.ca_cert)
        yield repo, server, tls, tmp


def _refused(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
    metadata: bytes,
    files: dict[str, Path],
) -> UploadError:
    repo, server, tls, _ = site
    before = published(repo.root)
    audit_before = (repo.root / ".ota" / "audit.log").read_bytes()
    with pytest.raises(UploadError) as refused:
        upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
    assert "\n" not in str(refused.value)
    assert published(repo.root) == before
    assert (repo.root / ".ota" / "audit.log").read_bytes() == audit_before
    return refused.value


def test_server_refuses_to_replace_a_published_image_with_other_bytes(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
) -> None:
    repo, _, _, tmp = site
    metadata, files = publisher_update(repo, "model-x", {FW1: b"\x7fELF evil"}, tmp=tmp / "replace")
    refused = _refused(site, metadata, files)
    assert refused.status == 409
    assert f"{FW1} is published already with other bytes" in str(refused)


def test_server_refuses_to_change_what_a_published_image_says(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
) -> None:
    """Same bytes, but the signed custom (version, counter, hardware ids) changed."""
    repo, _, _, tmp = site
    custom = firmware_custom("1.0.0", "model-x", counter=7)
    metadata, files = publisher_update(
        repo, "model-x", {FW1: V1}, custom=custom, tmp=tmp / "recustom"
    )
    refused = _refused(site, metadata, files)
    assert refused.status == 409
    assert f"{FW1} is published already with another custom" in str(refused)


def test_server_refuses_a_counter_above_the_bound(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
) -> None:
    repo, _, _, tmp = site
    path = "firmware/model-x/fw-9.0.0.bin"
    custom = firmware_custom("9.0.0", "model-x", counter=2**63 - 1)
    metadata, files = publisher_update(
        repo, "model-x", {path: b"nine"}, custom=custom, tmp=tmp / "counter"
    )
    refused = _refused(site, metadata, files)
    assert refused.status == 400
    assert f"security counter {2**63 - 1} is above the maximum {2**31 - 1}" in str(refused)


def test_server_refuses_a_role_that_expires_in_9999_days(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
) -> None:
    repo, _, _, tmp = site
    metadata, files = publisher_update(
        repo, "model-x", {"firmware/model-x/fw-2.0.0.bin": b"two"}, tmp=tmp / "expiry"
    )
    md = Metadata[Targets].from_bytes(metadata)
    md.signed.expires = (datetime.now(UTC) + timedelta(days=9999)).replace(microsecond=0)
    md.signatures.clear()
    for signer in repo.signers["model-x"]:
        md.sign(signer, append=True)
    refused = _refused(site, md.to_bytes(), files)
    assert refused.status == 400
    assert "expires in 9999 days, more than the maximum 3650" in str(refused)


def test_server_reupload_of_identical_bytes_stays_accepted(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
) -> None:
    """Listing a published image again with its own bytes (and file) is not a change."""
    repo, server, tls, tmp = site
    fw2 = "firmware/model-x/fw-2.0.0.bin"
    version = repo.open().current_metadata("model-x").signed.version + 1
    metadata, files = publisher_update(repo, "model-x", {FW1: V1, fw2: b"two"}, tmp=tmp / "same")
    answer = upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
    assert answer["version"] == version and sorted(answer["targets"]) == [FW1, fw2]
    listed = json.loads((repo.root / "metadata" / f"{version}.model-x.json").read_bytes())
    assert sorted(listed["signed"]["targets"]) == [FW1, fw2]
    sha = listed["signed"]["targets"][FW1]["hashes"]["sha256"]
    assert (
        repo.root / "targets" / "firmware" / "model-x" / f"{sha}.fw-1.0.0.bin"
    ).read_bytes() == V1


# -- ota-publish --repo -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("publisher-template")
    repo, keys_dir = base / "repo", base / "keys"
    ota_repo(repo, "init", "--dev")
    ota_repo(repo, "key", "generate", "pub-x", "--out", str(keys_dir))
    ota_repo(
        repo, "delegate", ROLE, "--paths", "firmware/model-x/*",
        "--key", str(keys_dir / "pub-x.pub"), "--sign-with", f"encfile:{keys_dir / 'pub-x.key'}",
        "--publish",
    )  # fmt: skip
    return repo, keys_dir


@pytest.fixture
def local(template: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the template repository per test."""
    repo = tmp_path / "repo"
    shutil.copytree(template[0], repo)
    return repo, template[1]


def ota_publish(
    keys_dir: Path, image: Path | str, version: str, *where: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "ota-publish"), "add", str(image), "--hwid", "model-x", "--version", version,
            "--role", ROLE, "--key", f"encfile:{keys_dir / 'pub-x.key'}", *where,
        ],
        env=cli_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_local_publish_refuses_to_replace_a_published_image(
    local: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, keys_dir = local
    image = tmp_path / "fw.bin"
    image.write_bytes(b"first")
    assert ota_publish(keys_dir, image, "1.0.0", "--repo", str(repo)).returncode == 0
    before = published(repo)
    image.write_bytes(b"second")
    proc = ota_publish(keys_dir, image, "1.0.0", "--repo", str(repo))
    assert_one_line_error(proc, f"{FW1} is published already with other bytes")
    assert published(repo) == before


@pytest.mark.parametrize(
    ("counter", "ok"),
    [(2**31 - 1, True), (2**31, False), (2**63 - 1, False)],
    ids=["at-the-bound", "above-the-bound", "device-maximum"],
)
def test_local_publish_bounds_the_security_counter(
    local: tuple[Path, Path], tmp_path: Path, counter: int, ok: bool
) -> None:
    repo, keys_dir = local
    image = tmp_path / "fw.bin"
    image.write_bytes(b"image")
    before = published(repo)
    proc = ota_publish(
        keys_dir, image, "1.0.0", "--security-counter", str(counter), "--repo", str(repo)
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
        listed = json.loads((repo / "metadata" / f"2.{ROLE}.json").read_bytes())
        assert listed["signed"]["targets"][FW1]["custom"]["firmware"]["security_counter"] == counter
    else:
        assert_one_line_error(proc, f"security counter {counter} is above the maximum {2**31 - 1}")
        assert published(repo) == before


def test_a_raised_counter_bound_in_the_config_lets_a_recovery_publish_above(
    local: tuple[Path, Path], tmp_path: Path
) -> None:
    """The runbook's "raise the counter above the attacker's": the bound is configurable."""
    repo, keys_dir = local
    config_file = repo / ".ota" / "config.json"
    config = json.loads(config_file.read_text())
    config["limits"] = {"max_security_counter": 2**32}
    config_file.write_text(json.dumps(config))
    image = tmp_path / "fw.bin"
    image.write_bytes(b"recovery")
    proc = ota_publish(
        keys_dir, image, "1.0.0", "--security-counter", str(2**31), "--repo", str(repo)
    )
    assert proc.returncode == 0, proc.stderr


def test_local_publish_bounds_the_role_expiry(local: tuple[Path, Path], tmp_path: Path) -> None:
    repo, keys_dir = local
    config_file = repo / ".ota" / "config.json"
    config = json.loads(config_file.read_text())
    config["expiry_days"][ROLE] = 9999
    config_file.write_text(json.dumps(config))
    image = tmp_path / "fw.bin"
    image.write_bytes(b"image")
    before = published(repo)
    proc = ota_publish(keys_dir, image, "1.0.0", "--repo", str(repo))
    assert_one_line_error(proc, f"{ROLE} v2 expires in 9999 days, more than the maximum 3650")
    assert published(repo) == before


def test_init_refuses_an_expiry_of_9999_days(tmp_path: Path) -> None:
    proc = ota_repo(tmp_path / "repo", "init", "--dev", "--expiry", "targets=9999", check=False)
    assert_one_line_error(proc, "at most 3650 days")
    assert not (tmp_path / "repo" / "metadata").exists()


def _not_regular(kind: str, tmp_path: Path) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo"
    if kind == "directory":
        (tmp_path / "dir.bin").mkdir()
        return tmp_path / "dir.bin"
    return Path({"dev-zero": "/dev/zero", "dev-null": "/dev/null"}[kind])


@pytest.mark.parametrize(
    ("kind", "what"),
    [("fifo", "a FIFO"), ("dev-zero", "a device"), ("dev-null", "a device"),
     ("directory", "a directory")],
    ids=["fifo", "dev-zero", "dev-null", "directory"],
)  # fmt: skip
def test_publish_reads_only_regular_files(
    local: tuple[Path, Path], tmp_path: Path, kind: str, what: str
) -> None:
    """Refused at once (a FIFO with no writer would block a reader for ever)."""
    repo, keys_dir = local
    source = _not_regular(kind, tmp_path)
    before = published(repo)
    started = time.monotonic()
    proc = ota_publish(keys_dir, source, "1.0.0", "--repo", str(repo), timeout=30)
    assert time.monotonic() - started < 30
    assert_one_line_error(proc, f"not a regular file: {source} is {what}")
    assert published(repo) == before


_GROWER = """
import sys, time
with open(sys.argv[1], "ab", buffering=0) as f:
    print("growing", flush=True)
    while True:
        f.write(b"g" * 4096)
        time.sleep(0.001)
"""


@contextmanager
def growing(path: Path, size: int = 32 * 1024 * 1024) -> Iterator[None]:
    """`path` keeps growing (4 KiB about every millisecond) while the block runs."""
    path.write_bytes(os.urandom(1024) * (size // 1024))
    proc = subprocess.Popen(
        [sys.executable, "-c", _GROWER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    with proc.stdout:
        try:
            assert proc.stdout.readline().strip() == "growing"
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_local_publish_of_a_growing_file_is_refused_and_leaves_no_orphan(
    local: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, keys_dir = local
    image = tmp_path / "fw.bin"
    before = published(repo)
    with growing(image):
        proc = ota_publish(keys_dir, image, "1.0.0", "--repo", str(repo))
    assert_one_line_error(proc, "the file changed while it was read: try again")
    assert published(repo) == before  # no orphan in targets/, nothing in metadata/


def test_a_local_publish_that_fails_after_storing_leaves_no_orphan(
    local: tuple[Path, Path], tmp_path: Path
) -> None:
    """The role's metadata cannot be written (a folder sits where it goes): the image stored
    a moment before is removed again."""
    repo, keys_dir = local
    (repo / "metadata" / f"2.{ROLE}.json").mkdir()
    image = tmp_path / "fw.bin"
    image.write_bytes(b"an image that is never published")
    before = published(repo)
    proc = ota_publish(keys_dir, image, "1.0.0", "--repo", str(repo))
    assert_one_line_error(proc, "Is a directory")
    assert published(repo) == before
    assert not [p for p in (repo / "targets").rglob("*") if p.is_file()]


# -- ota-publish --server ---------------------------------------------------------------------


@pytest.fixture
def server_site(local: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[Path, Path, list[str]]]:
    repo, keys_dir = local
    tls = make_tls(tmp_path / "tls")
    with run_gunicorn(
        repo, cert=tls.server_cert, key=tls.server_key, ca_cert=tls.ca_cert,
        config={"device_auth": False, "upload_tokens": False},
    ) as server:  # fmt: skip
        yield repo, keys_dir, [
            "--server", server.url, "--root", str(repo / "metadata" / "1.root.json"),
            "--ca-bundle", str(tls.ca_cert),
        ]  # fmt: skip


def test_server_upload_of_a_growing_file_is_refused_clearly(
    server_site: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    """Not the server's misleading "no role field": the publisher notices first."""
    repo, keys_dir, where = server_site
    image = tmp_path / "fw.bin"
    before = published(repo)
    with growing(image):
        proc = ota_publish(keys_dir, image, "1.0.0", *where)
    assert_one_line_error(proc, "the file changed while it was read: try again")
    assert published(repo) == before
    image.write_bytes(b"settled")  # the same command on a settled file publishes
    proc = ota_publish(keys_dir, image, "1.0.0", *where)
    assert proc.returncode == 0, proc.stderr


def test_server_upload_refuses_a_counter_above_the_bound_before_signing(
    server_site: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    repo, keys_dir, where = server_site
    image = tmp_path / "fw.bin"
    image.write_bytes(b"image")
    before = published(repo)
    proc = ota_publish(keys_dir, image, "1.0.0", "--security-counter", str(2**63 - 1), *where)
    assert_one_line_error(proc, f"security counter {2**63 - 1} is above the maximum {2**31 - 1}")
    assert published(repo) == before


def test_server_upload_refuses_a_fifo(
    server_site: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    repo, keys_dir, where = server_site
    os.mkfifo(tmp_path / "fifo")
    before = published(repo)
    proc = ota_publish(keys_dir, tmp_path / "fifo", "1.0.0", *where, timeout=30)
    assert_one_line_error(proc, "is a FIFO")
    assert published(repo) == before


def test_server_refuses_a_removed_image_coming_back_with_other_bytes(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
) -> None:
    repo, server, tls, tmp = site
    path = "firmware/model-x/fw-5.0.0.bin"
    metadata, files = publisher_update(repo, "model-x", {path: V1 + b"5"}, tmp=tmp / "add5")
    upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
    dropped: Metadata[Targets] = repo.open().current_metadata("model-x")
    del dropped.signed.targets[path]
    dropped.signed.version += 1
    dropped.signatures.clear()
    for signer in repo.signers["model-x"]:
        dropped.sign(signer, append=True)
    upload_role(server.url, "model-x", dropped.to_bytes(), {}, ca_bundle=tls.ca_cert)
    metadata, files = publisher_update(repo, "model-x", {path: b"\x7fELF evil"}, tmp=tmp / "back")
    refused = _refused(site, metadata, files)
    assert refused.status == 409
    assert f"{path} was published before with other bytes" in str(refused)
