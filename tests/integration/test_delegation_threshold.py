"""A delegated role whose keys are offline and need 2 signatures: `ota-publish add` stages a
signing request, the second holder signs, `ota-repo publish` checks what it lists."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from repository import staging
from repository.errors import BadInputError
from repository.manager import OtaRepository
from repository.signing import content_digest
from tests.helpers.ceremony import client, use_passphrase
from tests.helpers.repo import BIN, cli_env, ota_repo, sign_request, tree_digest

ROLE = "firmware-model-x"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    keys = tmp_path / "keys"
    ota_repo(repo, "init", "--dev")
    for name in ("pub-a", "pub-b"):
        ota_repo(repo, "key", "generate", name, "--out", str(keys))
    ota_repo(
        repo, "delegate", ROLE, "--paths", "firmware/model-x/*", "--threshold", "2",
        "--key", str(keys / "pub-a.pub"), "--key", str(keys / "pub-b.pub"),
        "--sign-with", f"encfile:{keys}/pub-a.key", "--sign-with", f"encfile:{keys}/pub-b.key",
        "--publish",
    )  # fmt: skip
    return repo


def test_two_of_two_publisher_role_goes_through_a_request(repo: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    image = tmp_path / "fw.bin"
    image.write_bytes(b"two-person firmware" * 100)
    before = tree_digest(repo / "metadata")
    proc = subprocess.run(
        [
            str(BIN / "ota-publish"), "add", str(image), "--hwid", "model-x", "--version", "3.0.0",
            "--role", ROLE, "--key", f"encfile:{keys}/pub-a.key", "--repo", str(repo),
        ],
        env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "needs more signatures: staged request" in proc.stdout
    assert tree_digest(repo / "metadata") == before  # nothing published yet
    (req,) = json.loads(ota_repo(repo, "requests", "--json").stdout)["requests"]
    assert req["thresholds"][0]["have"] == 1 and req["thresholds"][0]["need"] == 2
    sign_request(repo, req["id"], f"encfile:{keys}/pub-b.key")
    ota_repo(repo, "publish", req["id"])
    updater, _ = client(repo, tmp_path / "device", (repo / "metadata" / "1.root.json").read_bytes())
    updater.refresh()
    assert updater.get_targetinfo("firmware/model-x/fw-3.0.0.bin") is not None
    ota_repo(repo, "verify")


@pytest.mark.parametrize(
    "path,content,stored,message",
    [
        ("firmware/model-y/fw.bin", b"y", True, "outside its delegation"),
        ("firmware/model-x/fw.bin", b"x", False, "its file is not in targets/"),
    ],
    ids=["outside-delegation", "file-missing"],
)
def test_publish_checks_what_a_request_lists(
    repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    content: bytes,
    stored: bool,
    message: str,
) -> None:
    use_passphrase(monkeypatch)
    keys = tmp_path / "keys"
    r = OtaRepository.load(repo)
    with r.writing("stage-request"):
        md = staging.next_version(r, ROLE)
        tf = TargetFile.from_data(path, content)
        md.signed.targets[path] = tf
        if stored:
            dest = repo / "targets" / f"{path.rsplit('/', 1)[0]}"
            dest.mkdir(parents=True, exist_ok=True)
            (dest / f"{tf.hashes['sha256']}.fw.bin").write_bytes(content)
        req = staging.stage(r, {ROLE: md})
    for name in ("pub-a", "pub-b"):
        staging.sign_staged(
            OtaRepository.load(repo),
            req.id,
            f"encfile:{keys}/{name}.key",
            expect=content_digest(req.changes),
        )
    before = tree_digest(repo / "metadata")
    with pytest.raises(BadInputError, match=message):
        staging.publish(OtaRepository.load(repo), req.id)
    assert tree_digest(repo / "metadata") == before
