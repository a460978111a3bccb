"""Every upload refusal through real gunicorn over TLS with the publisher's `upload_role`: the
right status, one clear error, and the published folders unchanged byte for byte."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from repository.publisher.upload import UploadError, upload_role
from tests.helpers.certs import TlsFiles, make_tls
from tests.helpers.gunicorn import GunicornServer, run_gunicorn
from tests.helpers.repo import published
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

FW = "firmware/model-x/fw-2.0.0.bin"
DATA = b"\x7fELF 2.0.0" * 4000
MAX_UPLOAD = 200_000


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DelegatedRepo, GunicornServer, TlsFiles, Path]]:
    tmp = tmp_path_factory.mktemp("refusals")
    tls = make_tls(tmp / "tls")
    repo = make_delegated_repo(tmp / "repo", ("model-x", "model-y"), keys=3, threshold=2)
    first, files = publisher_update(
        repo,
        "model-x",
        {"firmware/model-x/fw-1.0.0.bin": b"v1"},
        signers=repo.signers["model-x"][:2],
        tmp=tmp / "v1",
    )
    config = {"max_upload_bytes": MAX_UPLOAD, "upload_tokens": False}
    with run_gunicorn(
        repo.root, cert=tls.server_cert, key=tls.server_key, ca_cert=tls.ca_cert, config=config
    ) as server:
        upload_role(server.url, "model-x", first, files, ca_bundle=tls.ca_cert)
        yield repo, server, tls, tmp


def _case(name: str, repo: DelegatedRepo, tmp: Path) -> tuple[bytes, dict[str, Path]]:
    two = repo.signers["model-x"][:2]
    if name == "wrong-key":
        others = [CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()]
        return publisher_update(repo, "model-x", {FW: DATA}, signers=others, tmp=tmp)
    if name == "too-few-keys":
        return publisher_update(repo, "model-x", {FW: DATA}, signers=two[:1], tmp=tmp)
    if name == "outside-delegation":
        return publisher_update(
            repo, "model-x", {"firmware/model-y/fw-2.0.0.bin": DATA}, signers=two, tmp=tmp
        )
    if name == "lower-version":
        return publisher_update(repo, "model-x", {FW: DATA}, signers=two, version=1, tmp=tmp)
    if name == "mismatched-bytes":
        metadata, files = publisher_update(repo, "model-x", {FW: DATA}, signers=two, tmp=tmp)
        files[FW].write_bytes(DATA[:-1] + b"?")
        return metadata, files
    if name == "oversize":
        big = DATA * 10  # 400 kB > MAX_UPLOAD
        return publisher_update(repo, "model-x", {FW: big}, signers=two, tmp=tmp)
    raise AssertionError(name)


CASES = [
    ("wrong-key", 403, "not signed by enough"),
    ("too-few-keys", 403, "not signed by enough"),
    ("outside-delegation", 403, "not trusted for firmware/model-y/fw-2.0.0.bin"),
    ("lower-version", 409, "does not follow the published version 1"),
    ("mismatched-bytes", 400, "do not match"),
    ("oversize", 413, "request entity too large"),
]


@pytest.mark.parametrize(("name", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_refusal_over_tls_changes_nothing(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
    name: str,
    status: int,
    message: str,
) -> None:
    repo, server, tls, tmp = site
    metadata, files = _case(name, repo, tmp / name)
    before = published(repo.root)
    audit_before = (repo.root / ".ota" / "audit.log").read_bytes()
    with pytest.raises(UploadError) as refused:
        upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
    if name == "oversize" and refused.value.status == 0:
        # the server may answer 413 and close before the client finished sending
        assert "larger than it accepts" in str(refused.value)
    else:
        assert refused.value.status == status
        assert f"({status})" in str(refused.value) and message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert published(repo.root) == before
    assert (repo.root / ".ota" / "audit.log").read_bytes() == audit_before


def test_a_good_upload_after_all_refusals(
    site: tuple[DelegatedRepo, GunicornServer, TlsFiles, Path],
) -> None:
    repo, server, tls, tmp = site
    metadata, files = publisher_update(
        repo, "model-x", {FW: DATA}, signers=repo.signers["model-x"][1:], tmp=tmp / "good"
    )
    answer = upload_role(server.url, "model-x", metadata, files, ca_bundle=tls.ca_cert)
    assert answer == {"role": "model-x", "version": 2, "targets": [FW]}
