"""The publisher upload API: what is accepted, and every refusal with its status and the
published folders unchanged byte for byte."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Targets

from repository.devices import add_uploader
from repository.errors import KeyError_
from repository.layout import RepoPaths
from repository.server import create_app
from repository.upload import OnlineOnlyRepository
from tests.helpers.repo import published
from tests.helpers.server_repo import DelegatedRepo, make_delegated_repo, publisher_update

FW2 = "firmware/model-x/fw-2.0.0.bin"
FW2_BYTES = b"\x7fELF model-x 2.0.0" * 700


def test_an_upload_is_published_with_snapshot_and_timestamp(
    client: FlaskClient, delegated: DelegatedRepo, tmp_path: Path, upload: Callable[..., Any]
) -> None:
    before_ts = json.loads((delegated.root / "metadata" / "timestamp.json").read_bytes())
    metadata, files = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
    r = upload(client, "model-x", metadata, files)
    assert r.status_code == 201, r.json
    assert r.json == {"role": "model-x", "version": 2, "targets": [FW2]}
    stored_md = (delegated.root / "metadata" / "2.model-x.json").read_bytes()
    assert stored_md == metadata  # the publisher's exact bytes
    md = Metadata[Targets].from_bytes(stored_md)
    assert md.signed.version == 2 and FW2 in md.signed.targets
    assert md.signatures.keys() == Metadata.from_bytes(metadata).signatures.keys()
    sha = md.signed.targets[FW2].hashes["sha256"]
    stored = delegated.root / "targets" / "firmware" / "model-x" / f"{sha}.fw-2.0.0.bin"
    assert stored.read_bytes() == FW2_BYTES
    ts = json.loads((delegated.root / "metadata" / "timestamp.json").read_bytes())
    assert ts["signed"]["version"] == before_ts["signed"]["version"] + 1
    audit_log = (delegated.root / ".ota" / "audit.log").read_text().splitlines()
    last = json.loads(audit_log[-1])
    assert last["action"] == "upload" and last["role"] == "model-x"
    assert last["publisher"] == "anonymous" and last["targets_added"] == [FW2]
    assert last["versions"]["model-x"] == 2
    request_log = (delegated.root / ".ota" / "server-audit.log").read_text().splitlines()
    assert json.loads(request_log[-1])["event"] == "upload"


def test_unchanged_targets_need_no_upload(
    client: FlaskClient, delegated: DelegatedRepo, tmp_path: Path, upload: Callable[..., Any]
) -> None:
    metadata, files = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
    r = upload(client, "model-x", metadata, files)
    assert r.status_code == 201
    assert sorted(Metadata.from_bytes(metadata).signed.targets) == [
        "firmware/model-x/fw-1.0.0.bin",
        FW2,
    ]


def _bad_upload(case: str, repo: DelegatedRepo, tmp: Path) -> tuple[str, bytes, dict[str, Path]]:
    """(role, metadata, files) for one refusal case."""
    if case == "wrong-key":
        return (
            "model-x",
            *publisher_update(
                repo,
                "model-x",
                {FW2: FW2_BYTES},
                signers=[CryptoSigner.generate_ed25519()],
                tmp=tmp,
            ),
        )
    if case == "other-models-key":
        return (
            "model-x",
            *publisher_update(
                repo, "model-x", {FW2: FW2_BYTES}, signers=repo.signers["model-y"], tmp=tmp
            ),
        )
    if case == "unsigned":
        return (
            "model-x",
            *publisher_update(repo, "model-x", {FW2: FW2_BYTES}, signers=[], tmp=tmp),
        )
    if case == "outside-delegation":
        return (
            "model-x",
            *publisher_update(
                repo, "model-x", {"firmware/model-y/fw-2.0.0.bin": FW2_BYTES}, tmp=tmp
            ),
        )
    if case == "lower-version":
        return ("model-x", *publisher_update(repo, "model-x", {FW2: FW2_BYTES}, version=1, tmp=tmp))
    if case == "skipped-version":
        return ("model-x", *publisher_update(repo, "model-x", {FW2: FW2_BYTES}, version=5, tmp=tmp))
    if case == "mismatched-bytes":
        metadata, files = publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp)
        files[FW2].write_bytes(FW2_BYTES[:-1] + b"!")
        return "model-x", metadata, files
    if case == "truncated-bytes":
        metadata, files = publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp)
        files[FW2].write_bytes(FW2_BYTES[:100])
        return "model-x", metadata, files
    if case == "missing-file":
        metadata, _ = publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp)
        return "model-x", metadata, {}
    if case == "unlisted-file":
        metadata, files = publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp)
        extra = tmp / "extra.bin"
        extra.write_bytes(b"extra")
        return "model-x", metadata, {**files, "firmware/model-x/extra.bin": extra}
    if case == "unknown-role":
        return ("model-z", *publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp))
    if case == "top-level-role":
        return ("targets", *publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp))
    if case == "role-mismatch":  # model-x's metadata presented as model-y's
        return ("model-y", *publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp))
    if case == "garbage-metadata":
        return "model-x", b'{"signed": 1}', {}
    if case == "traversal-filename":
        metadata, files = publisher_update(repo, "model-x", {FW2: FW2_BYTES}, tmp=tmp)
        return "model-x", metadata, {"../../.ota/config.json": files[FW2]}
    raise AssertionError(case)


REFUSALS = [
    ("wrong-key", 403, "not signed by enough"),
    ("other-models-key", 403, "not signed by enough"),
    ("unsigned", 403, "not signed by enough"),
    ("outside-delegation", 403, "not trusted for firmware/model-y/fw-2.0.0.bin"),
    ("lower-version", 409, "does not follow the published version 1"),
    ("skipped-version", 409, "does not follow the published version 1"),
    ("mismatched-bytes", 400, "do not match"),
    ("truncated-bytes", 400, "do not match"),
    ("missing-file", 400, "needs its file uploaded"),
    ("unlisted-file", 400, "is not listed in the metadata"),
    ("unknown-role", 403, "is not delegated"),
    ("top-level-role", 403, "is not a delegated role"),
    ("role-mismatch", 403, "model-y is not trusted for firmware/model-x/"),
    ("garbage-metadata", 400, "not valid TUF metadata"),
    ("traversal-filename", 400, "target path"),
]


@pytest.mark.parametrize(("case", "status", "message"), REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refused_uploads_change_nothing_published(
    client: FlaskClient,
    delegated: DelegatedRepo,
    tmp_path: Path,
    upload: Callable[..., Any],
    case: str,
    status: int,
    message: str,
) -> None:
    role, metadata, files = _bad_upload(case, delegated, tmp_path / "pub")
    before = published(delegated.root)
    audit_before = (delegated.root / ".ota" / "audit.log").read_bytes()
    r = upload(client, role, metadata, files)
    assert r.status_code == status, r.json
    assert message in r.json["error"]
    assert published(delegated.root) == before
    assert (delegated.root / ".ota" / "audit.log").read_bytes() == audit_before
    assert not list((delegated.root / ".ota" / "staging").iterdir())
    entry = json.loads((delegated.root / ".ota" / "server-audit.log").read_text().splitlines()[-1])
    assert entry["event"] == "upload-refused" and entry["status"] == status


def test_too_few_keys_for_a_threshold_of_two(tmp_path: Path, upload: Callable[..., Any]) -> None:
    from repository.server import create_app

    repo = make_delegated_repo(tmp_path / "repo", ("model-x",), keys=3, threshold=2)
    client = create_app({"repo": str(repo.root), "upload_tokens": False}).test_client()
    one = repo.signers["model-x"][:1]
    metadata, files = publisher_update(
        repo, "model-x", {FW2: FW2_BYTES}, signers=one, tmp=tmp_path / "a"
    )
    before = published(repo.root)
    r = upload(client, "model-x", metadata, files)
    assert r.status_code == 403 and "not signed by enough" in r.json["error"]
    assert published(repo.root) == before
    two = repo.signers["model-x"][1:]
    metadata, files = publisher_update(
        repo, "model-x", {FW2: FW2_BYTES}, signers=two, tmp=tmp_path / "b"
    )
    assert upload(client, "model-x", metadata, files).status_code == 201


def test_oversize_upload_is_413_and_changes_nothing(
    make_app: Callable[..., Flask],
    delegated: DelegatedRepo,
    tmp_path: Path,
    upload: Callable[..., Any],
) -> None:
    client = make_app(max_upload_bytes=8 * 1024).test_client()
    metadata, files = publisher_update(delegated, "model-x", {FW2: b"x" * 20_000}, tmp=tmp_path)
    before = published(delegated.root)
    r = upload(client, "model-x", metadata, files)
    assert r.status_code == 413
    assert r.json == {"error": "request entity too large"}
    assert published(delegated.root) == before


def test_oversize_metadata_is_413(
    make_app: Callable[..., Flask],
    delegated: DelegatedRepo,
    tmp_path: Path,
    upload: Callable[..., Any],
) -> None:
    client = make_app(max_metadata_bytes=100).test_client()
    metadata, files = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
    before = published(delegated.root)
    assert upload(client, "model-x", metadata, files).status_code == 413
    assert published(delegated.root) == before


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"role": "model-x"}', "application/json", 415),
        (b"role=model-x", "application/x-www-form-urlencoded", 415),
        (
            b'--b\r\nContent-Disposition: form-data; name="role"\r\n\r\nmodel-x\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            400,
        ),
        (
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            400,
        ),
    ],
    ids=["json", "urlencoded", "no-metadata", "no-role"],
)
def test_malformed_upload_requests(
    client: FlaskClient, delegated: DelegatedRepo, body: bytes, content_type: str, status: int
) -> None:
    before = published(delegated.root)
    r = client.post("/api/v1/publish", data=body, content_type=content_type)
    assert r.status_code == status and "error" in r.json
    assert published(delegated.root) == before


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "default"])
def test_upload_tokens_when_the_config_requires_them(
    make_app: Callable[..., Flask],
    delegated: DelegatedRepo,
    tmp_path: Path,
    upload: Callable[..., Any],
    explicit: bool,
) -> None:
    if explicit:
        client = make_app(upload_tokens=True).test_client()
    else:  # the shipped default: no setting at all
        app = create_app({"repo": str(delegated.root), "registry_reload_interval": 0})
        client = app.test_client()
    token = add_uploader(RepoPaths(delegated.root), "ci-x", ["model-x"])
    metadata, files = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
    before = published(delegated.root)
    assert upload(client, "model-x", metadata, files).status_code == 401
    bad = {"Authorization": "Bearer otau_wrong"}
    assert upload(client, "model-x", metadata, files, bad).status_code == 401
    wrong_role = add_uploader(RepoPaths(delegated.root), "ci-y", ["model-y"])
    r = upload(client, "model-x", metadata, files, {"Authorization": f"Bearer {wrong_role}"})
    assert r.status_code == 403
    assert published(delegated.root) == before
    r = upload(client, "model-x", metadata, files, {"Authorization": f"Bearer {token}"})
    assert r.status_code == 201
    last = json.loads((delegated.root / ".ota" / "audit.log").read_text().splitlines()[-1])
    assert last["publisher"] == "ci-x"


def test_the_server_needs_no_offline_key(
    client: FlaskClient, delegated: DelegatedRepo, tmp_path: Path, upload: Callable[..., Any]
) -> None:
    for name in ("root", "targets"):
        (delegated.root / ".ota" / "keys" / f"{name}.key").unlink()
    metadata, files = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
    assert upload(client, "model-x", metadata, files).status_code == 201


def test_the_server_repository_refuses_to_load_offline_signers(
    delegated: DelegatedRepo,
) -> None:
    repo = OnlineOnlyRepository.load(delegated.root)
    for role in ("root", "targets", "model-x"):
        with pytest.raises(KeyError_, match="holds no key"):
            repo.signers_for(role)
    assert repo.signers_for("timestamp")


def test_a_staged_part_is_never_kept(
    client: FlaskClient, delegated: DelegatedRepo, tmp_path: Path
) -> None:
    metadata, _ = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
    data = {
        "role": "model-x",
        "metadata": (io.BytesIO(metadata), "metadata.json"),
        "target": (io.BytesIO(FW2_BYTES), FW2),
    }
    assert client.post("/api/v1/publish", data=data).status_code == 201
    assert not list((delegated.root / ".ota" / "staging").iterdir())


def test_the_publishers_exact_bytes_are_stored_and_served(
    client: FlaskClient, delegated: DelegatedRepo, tmp_path: Path, upload: Callable[..., Any]
) -> None:
    metadata, files = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
    pretty = json.dumps(json.loads(metadata), indent=4, sort_keys=False).encode() + b"\n"
    assert pretty != metadata
    assert upload(client, "model-x", pretty, files).status_code == 201
    assert (delegated.root / "metadata" / "2.model-x.json").read_bytes() == pretty
    served = client.get("/metadata/2.model-x.json")
    assert served.status_code == 401  # device auth on; with auth off the bytes are the same
    open_client = create_app({"repo": str(delegated.root), "device_auth": False}).test_client()
    assert open_client.get("/metadata/2.model-x.json").data == pretty


def test_hash_bins_are_never_uploaded(
    tmp_path: Path, upload: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuf.api.metadata import Delegations, SuccinctRoles

    from repository.create import init_dev
    from tests.helpers.repo import PASSPHRASE

    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    repo = init_dev(tmp_path / "repo")
    signer = CryptoSigner.generate_ed25519()
    with repo.writing("bins"):
        with repo.edit_targets() as targets:
            bins = SuccinctRoles([], 1, 2, "bins")
            targets.delegations = Delegations(keys={}, roles=None, succinct_roles=bins)
            targets.add_key(signer.public_key)
        repo.publish_snapshot_and_timestamp()
    fake = DelegatedRepo(repo.paths.root, {"bins-0": [signer]})
    metadata, files = publisher_update(fake, "bins-0", {FW2: FW2_BYTES}, tmp=tmp_path / "p")
    client = create_app({"repo": str(repo.paths.root), "upload_tokens": False}).test_client()
    before = published(repo.paths.root)
    r = upload(client, "bins-0", metadata, files)
    assert r.status_code == 403 and "not a publisher's delegated role" in r.json["error"]
    assert published(repo.paths.root) == before


def test_too_many_uploads_at_once_get_503(
    app: Flask, delegated: DelegatedRepo, tmp_path: Path, upload: Callable[..., Any]
) -> None:
    slots = app.extensions["ota"].upload_slots
    assert slots.acquire(blocking=False) and slots.acquire(blocking=False)  # two in progress
    try:
        metadata, files = publisher_update(delegated, "model-x", {FW2: FW2_BYTES}, tmp=tmp_path)
        r = upload(app.test_client(), "model-x", metadata, files)
        assert r.status_code == 503 and r.headers["Retry-After"] == "10"
    finally:
        slots.release()
        slots.release()
    assert upload(app.test_client(), "model-x", metadata, files).status_code == 201
