"""Succinct hash bins (TAP 15) under a publisher's role, signed by the publisher's own key:
10,000 targets, one more published with `ota-publish add` re-signs one bin + snapshot +
timestamp, a client looking up one target downloads only that target's bin, a device installs
from a bin over the real server, `ota-publish renew` keeps the role and untouched bins fresh."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from repository import hashbins
from repository.errors import BadInputError
from repository.keys import find_signer
from repository.manager import OtaRepository
from repository.targetfiles import published_path
from tests.helpers.ceremony import client, use_passphrase
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.repo import BIN, assert_one_line_error, cli_env, ota_repo, published

N_TARGETS = 10_000
BINS = 16
ROLE = "model-x"


def ota_publish(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(BIN / "ota-publish"), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def binned_repo(base: Path, bins: int = BINS) -> tuple[Path, str]:
    """A dev repository whose `model-x` role delegates to `bins` bins keyed with the
    publisher's key; returns the repository and the publisher's signer URI."""
    repo = base / "repo"
    ota_repo(repo, "init", "--dev")
    ota_repo(repo, "key", "generate", "pub-x", "--out", str(base / "keys"))
    uri = f"encfile:{base / 'keys' / 'pub-x.key'}"
    out = ota_repo(
        repo, "delegate", ROLE, "--paths", "firmware/model-x/*",
        "--key", str(base / "keys" / "pub-x.pub"), "--bins", str(bins),
        "--sign-with", uri, "--publish",
    ).stdout  # fmt: skip
    assert "published" in out, out
    return repo, uri


def publish(repo: Path, uri: str, tmp: Path, version: str, *extra: str) -> str:
    src = tmp / f"fw-{version}.bin"
    src.write_bytes(f"image {version}".encode() * 100)
    return ota_publish(
        "add", str(src), "--hwid", "model-x", "--version", version, "--role", ROLE,
        "--key", uri, "--repo", str(repo), *extra,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    mp = pytest.MonkeyPatch()
    use_passphrase(mp)
    try:
        repo_dir, uri = binned_repo(tmp_path_factory.mktemp("bins"))
        repo = OtaRepository.load(repo_dir)
        infos = []
        for i in range(N_TARGETS):
            data = f"image {i}".encode()
            tf = TargetFile.from_data(f"firmware/model-x/fw-{i}.bin", data)
            stored = published_path(repo_dir / "targets", tf)
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(data)  # as a bulk copy (rsync) would leave them
            infos.append(tf)
        signer = find_signer(uri, repo.keys_for(ROLE))
        # one publish: each bin edited once, snapshot and timestamp once
        touched = hashbins.add_stored_targets(repo, ROLE, infos, [signer])
        assert len(touched) == BINS
    finally:
        mp.undo()
    return repo_dir, uri


def test_bins_hold_every_target_in_the_right_bin(big_repo: tuple[Path, str]) -> None:
    repo_dir, _ = big_repo
    repo = OtaRepository.load(repo_dir)
    names = [n.removesuffix(".json") for n in repo.snapshot().meta if "-bins-" in n]
    assert sorted(names) == hashbins.bin_names(ROLE, BINS)
    total = 0
    for name in names:
        listed = repo.current_metadata(name).signed
        assert isinstance(listed, Targets)
        total += len(listed.targets)
        assert all(repo.role_for_target(ROLE, p) == name for p in listed.targets)
    assert total == N_TARGETS
    assert len(repo.targets(ROLE).targets) == 0


def test_one_more_target_re_signs_one_bin_snapshot_and_timestamp(
    big_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo_dir, uri = big_repo
    before = {p.name: p.stat().st_mtime_ns for p in (repo_dir / "metadata").iterdir()}
    out = publish(repo_dir, uri, tmp_path, "10000.0.0")
    after = {p.name: p.stat().st_mtime_ns for p in (repo_dir / "metadata").iterdir()}
    written = sorted(n for n in after if before.get(n) != after[n])
    path = "firmware/model-x/fw-10000.0.0.bin"
    expected_bin = OtaRepository.load(repo_dir).role_for_target(ROLE, path)
    assert len(written) == 3, written
    assert written[0] == f"3.{expected_bin}.json"  # v1 empty, v2 the bulk import
    assert written[1].endswith(".snapshot.json")
    assert written[2] == "timestamp.json"
    assert f"in {expected_bin} v3 " in out, out


def test_client_fetching_one_target_downloads_only_its_bin(
    big_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo_dir, _ = big_repo
    root = (repo_dir / "metadata" / "1.root.json").read_bytes()
    updater, fetcher = client(repo_dir, tmp_path / "device", root)
    updater.refresh()
    path = "firmware/model-x/fw-1234.bin"
    info = updater.get_targetinfo(path)
    assert info is not None
    updater.download_target(info, str(tmp_path / "fw.bin"))
    assert (tmp_path / "fw.bin").read_bytes() == b"image 1234"
    bins_fetched = [f for f in fetcher.fetched if "-bins-" in f]
    expected = OtaRepository.load(repo_dir).role_for_target(ROLE, path)
    assert len(bins_fetched) == 1 and bins_fetched[0].endswith(f".{expected}.json")


def test_publish_into_bins_over_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ota-publish add --server` signs only the bin the image falls in (ngclient finds it);
    `ota-publish renew --server` re-signs the role and every bin."""
    use_passphrase(monkeypatch)
    repo, uri = binned_repo(tmp_path, bins=4)
    names = [ROLE, *hashbins.bin_names(ROLE, 4)]
    tls: TlsFiles = make_tls(tmp_path / "tls", client_cn="publisher")
    token = ota_repo(repo, "upload-token", "add", "ci-x", "--role", ROLE).stdout.split()[-1]
    token_file = tmp_path / "upload-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)  # the role's upload token uploads its bins too
    with run_gunicorn(
        repo,
        cert=tls.server_cert,
        key=tls.server_key,
        ca_cert=tls.ca_cert,
        config={"device_auth": False},
    ) as server:
        server_args = (
            "--server", server.url, "--root", str(repo / "metadata" / "1.root.json"),
            "--ca-bundle", str(tls.ca_cert), "--token-file", str(token_file),
        )  # fmt: skip
        for version in ("1.0.0", "1.1.0"):
            src = tmp_path / f"fw-{version}.bin"
            src.write_bytes(f"image {version}".encode() * 100)
            out = ota_publish(
                "add", str(src), "--hwid", "model-x", "--version", version, "--role", ROLE,
                "--key", uri, *server_args,
            ).stdout  # fmt: skip
            name = OtaRepository.load(repo).role_for_target(
                ROLE, f"firmware/model-x/fw-{version}.bin"
            )
            assert f"in {name} v" in out, out
        before = published(repo)
        src = tmp_path / "fw-y.bin"
        src.write_bytes(b"y")
        refused = ota_publish(
            "add", str(src), "--hwid", "model-y", "--version", "1.0.0", "--role", ROLE,
            "--key", uri, *server_args, check=False,
        )  # fmt: skip
        assert_one_line_error(refused, "outside model-x's delegation")
        assert published(repo) == before
        versions = {n: OtaRepository.load(repo).targets(n).version for n in names}
        out = ota_publish("renew", "--role", ROLE, "--key", uri, *server_args).stdout
        assert "renewed model-x and its 4 bins" in out, out
        r = OtaRepository.load(repo)
        assert {n: r.targets(n).version for n in names} == {n: v + 1 for n, v in versions.items()}
    updater, _ = client(repo, tmp_path / "device", (repo / "metadata" / "1.root.json").read_bytes())
    updater.refresh()
    for version in ("1.0.0", "1.1.0"):
        info = updater.get_targetinfo(f"firmware/model-x/fw-{version}.bin")
        assert info is not None
        assert json.loads(json.dumps(info.custom))["firmware"]["version"] == version
    assert "and 2 targets verified" in ota_repo(repo, "verify").stdout  # walks the bins


def test_renew_re_signs_the_role_and_every_bin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing online renews a publisher's role or a bin no publish touched: `ota-publish
    renew` re-signs them all with a fresh expiry, one new version each."""
    use_passphrase(monkeypatch)
    repo, uri = binned_repo(tmp_path, bins=4)
    publish(repo, uri, tmp_path, "1.0.0")
    r = OtaRepository.load(repo)
    names = [ROLE, *hashbins.bin_names(ROLE, 4)]
    versions = {n: r.targets(n).version for n in names}
    expires = {n: r.targets(n).expires for n in names}
    out = ota_publish("renew", "--role", ROLE, "--key", uri, "--repo", str(repo)).stdout
    assert "renewed model-x and its 4 bins" in out, out
    r = OtaRepository.load(repo)
    for n in names:
        assert r.targets(n).version == versions[n] + 1
        assert r.targets(n).expires >= expires[n]
        assert r.targets(n).expires > datetime.now(UTC) + timedelta(days=80)
    assert "firmware/model-x/fw-1.0.0.bin" in {p for n in names[1:] for p in r.targets(n).targets}
    ota_repo(repo, "verify")


def test_rotate_re_keys_the_bins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_passphrase(monkeypatch)
    repo, uri = binned_repo(tmp_path, bins=2)
    publish(repo, uri, tmp_path, "1.0.0")
    ota_repo(repo, "key", "generate", "pub-x2", "--out", str(tmp_path / "keys"))
    new_pub = tmp_path / "keys" / "pub-x2.pub"
    new_uri = f"encfile:{tmp_path / 'keys' / 'pub-x2.key'}"
    old_keyid = json.loads((tmp_path / "keys" / "pub-x.pub").read_text())["keyid"]
    ota_repo(
        repo, "rotate", ROLE, "--add-key", str(new_pub), "--remove-key", old_keyid,
        "--sign-with", new_uri, "--publish",
    )  # fmt: skip
    new_keyid = json.loads(new_pub.read_text())["keyid"]
    r = OtaRepository.load(repo)
    for name in hashbins.bin_names(ROLE, 2):
        assert list(r.current_metadata(name).signatures) == [new_keyid]
    ota_repo(repo, "verify")
    refused = ota_publish(
        "add", str(tmp_path / "fw-1.0.0.bin"), "--hwid", "model-x", "--version", "1.0.1",
        "--role", ROLE, "--key", uri, "--repo", str(repo), check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    publish(repo, new_uri, tmp_path, "1.0.2")
    ota_repo(repo, "verify")


def test_targets_bins_are_refused(tmp_path: Path) -> None:
    """The former online-keyed layout cannot be set up: one line, nothing written."""
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    before = published(repo)
    assert_one_line_error(ota_repo(repo, "hash-bins", "16", check=False), "online key")
    assert_one_line_error(ota_repo(repo, "hash-bins", "--off", check=False), "nothing to turn off")
    assert published(repo) == before


def test_bit_length() -> None:
    assert hashbins.bit_length_for(256) == 8
    for bad in (1, 3, 2**15):
        with pytest.raises(BadInputError, match="power of two"):
            hashbins.bit_length_for(bad)
    assert hashbins.bins_of(Metadata(Targets()).signed) is None
    assert hashbins.bin_names("r", 2) == ["r-bins-0", "r-bins-1"]


def test_a_second_holder_signs_a_bins_publish_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role with bins and threshold 2: `ota-publish add` stages the touched bin; the second
    holder reviews and signs the exported request on another machine (no repository, their own
    trusted root), and the imported request publishes."""
    use_passphrase(monkeypatch)
    repo = tmp_path / "repo"
    ota_repo(repo, "init", "--dev")
    keys = tmp_path / "keys"
    for name in ("pub-a", "pub-b"):
        ota_repo(repo, "key", "generate", name, "--out", str(keys))
    uri_a, uri_b = f"encfile:{keys / 'pub-a.key'}", f"encfile:{keys / 'pub-b.key'}"
    ota_repo(
        repo, "delegate", ROLE, "--paths", "firmware/model-x/*", "--key", str(keys / "pub-a.pub"),
        "--key", str(keys / "pub-b.pub"), "--threshold", "2", "--bins", "2",
        "--sign-with", uri_a, "--sign-with", uri_b, "--publish",
    )  # fmt: skip
    out = publish(repo, uri_a, tmp_path, "1.0.0")
    assert "needs more signatures" in out, out
    (req,) = [p.stem for p in (repo / ".ota" / "staging").glob("*.json")]
    exported = tmp_path / "elsewhere" / "req.json"
    exported.parent.mkdir()
    ota_repo(repo, "request", "export", req, str(exported))
    root = str(repo / "metadata" / "1.root.json")

    def elsewhere(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "ota-repo"), *args, "--trusted-root", root],
            env=cli_env(), capture_output=True, text=True, timeout=120, cwd=exported.parent,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    shown = elsewhere("request", "show", str(exported))
    assert shown.returncode == 0, shown.stderr
    assert "firmware/model-x/fw-1.0.0.bin" in shown.stdout
    (digest,) = [
        ln.split()[-1] for ln in shown.stdout.splitlines() if ln.startswith("content hash:")
    ]
    signed = elsewhere("sign", str(exported), "--key", uri_b, "--expect", digest)
    assert signed.returncode == 0, signed.stderr
    ota_repo(repo, "request", "import", str(exported))
    ota_repo(repo, "publish", req)
    assert "and 1 targets verified" in ota_repo(repo, "verify").stdout
