"""Repositories with per-model delegations for update-server tests, built through the library.

`make_delegated_repo` creates a dev repository whose top-level targets delegates
`firmware/<hwid>/*` to one role per hardware model, each with its own in-memory publisher keys;
`publisher_update` builds and signs the next version of such a role the way a publisher's
machine does, for upload to the server.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, TargetFile, Targets

from repository.create import init_dev
from repository.manager import OtaRepository
from tests.helpers.repo import PASSPHRASE, firmware_custom


@dataclass
class DelegatedRepo:
    root: Path
    signers: dict[str, list[Signer]] = field(default_factory=dict)

    def open(self) -> OtaRepository:
        return OtaRepository.load(self.root)

    @property
    def trusted_root(self) -> bytes:
        return (self.root / "metadata" / "1.root.json").read_bytes()


def make_delegated_repo(
    root: Path, hwids: tuple[str, ...] = ("model-x",), *, keys: int = 1, threshold: int = 1
) -> DelegatedRepo:
    """A dev repository delegating `firmware/<hwid>/*` to role `<hwid>` for each model."""
    os.environ.setdefault("OTA_KEY_PASSPHRASE", PASSPHRASE)
    repo = init_dev(root)
    result = DelegatedRepo(repo.paths.root)
    with repo.writing("delegate"):
        with repo.edit_targets() as targets:
            targets.delegations = Delegations(keys={}, roles={})
            for hwid in hwids:
                role = DelegatedRole(hwid, [], threshold, True, paths=[f"firmware/{hwid}/*"])
                assert targets.delegations.roles is not None
                targets.delegations.roles[hwid] = role
                signers = [CryptoSigner.generate_ed25519() for _ in range(keys)]
                for signer in signers:
                    targets.add_key(signer.public_key, hwid)
                result.signers[hwid] = list(signers)
        repo.publish_snapshot_and_timestamp()
    return result


def publisher_update(
    repo: DelegatedRepo,
    role: str,
    files: dict[str, bytes],
    *,
    signers: list[Signer] | None = None,
    version: int | None = None,
    custom: dict[str, Any] | None = None,
    tmp: Path,
) -> tuple[bytes, dict[str, Path]]:
    """The next version of `role` listing `files` (path -> bytes), signed by `signers`.

    Returns:
        The signed metadata bytes and path -> local file for upload.
    """
    current = repo.open()
    if current.has_role(role):
        md: Metadata[Targets] = copy.deepcopy(current.current_metadata(role))
    else:
        md = Metadata(Targets())
        md.signed.version = 0
    md.signed.version = version if version is not None else md.signed.version + 1
    md.signed.expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    local: dict[str, Path] = {}
    tmp.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        tf = TargetFile.from_data(path, data, ["sha256"])
        version_name = path.rsplit("-", 1)[-1].removesuffix(".bin")
        tf.unrecognized_fields["custom"] = custom or firmware_custom(version_name, role)
        md.signed.targets[path] = tf
        local[path] = tmp / path.replace("/", "_")
        local[path].write_bytes(data)
    md.signatures.clear()
    for signer in signers if signers is not None else repo.signers[role]:
        md.sign(signer, append=True)
    return md.to_bytes(), local
