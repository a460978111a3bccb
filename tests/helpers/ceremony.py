"""A production repository as the security team builds it: three root holders (threshold 2),
one targets holder, online snapshot/timestamp keys; plus clients that trust root v1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.ngclient import Updater

from repository import keys
from repository.create import init_production
from repository.manager import OtaRepository
from repository.verify import DirectoryFetcher
from tests.helpers.repo import PASSPHRASE

HOLDERS = ("alice", "bob", "carol")


@dataclass
class Ceremony:
    repo_dir: Path
    keys_dir: Path

    def uri(self, name: str) -> str:
        return f"encfile:{self.keys_dir / name}.key"

    def pub(self, name: str) -> Path:
        return self.keys_dir / f"{name}.pub"

    def key(self, name: str) -> keys.SSlibKey:
        return keys.public_key_from_file(self.pub(name))

    def new_key(self, name: str, key_type: str = "ed25519") -> Path:
        keys.generate_key(self.keys_dir, name, key_type=key_type, passphrase=PASSPHRASE)
        return self.pub(name)

    def open(self) -> OtaRepository:
        return OtaRepository.load(self.repo_dir)


def use_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process library calls read the test passphrase from the environment, like the CLI."""
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(keys, "_secret_cache", {})  # a fresh cache, dropped after the test


def production_repo(tmp_path: Path) -> Ceremony:
    """Init as in docs/security-team.md: alice and bob sign root v1, release signs targets."""
    c = Ceremony(tmp_path / "repo", tmp_path / "keys")
    for name in (*HOLDERS, "release", "snapshot", "timestamp"):
        c.new_key(name)
    init_production(
        c.repo_dir,
        root_keys=[c.key(n) for n in HOLDERS],
        root_threshold=2,
        targets_keys=[c.key("release")],
        targets_threshold=1,
        online={
            "snapshot": (c.key("snapshot"), c.uri("snapshot")),
            "timestamp": (c.key("timestamp"), c.uri("timestamp")),
        },
        sign_with=[c.uri("alice"), c.uri("bob"), c.uri("release")],
    )
    return c


def client(repo_dir: Path, cache: Path, bootstrap: bytes) -> tuple[Updater, DirectoryFetcher]:
    """A real ngclient reading the repository folder, trusting `bootstrap` (a provisioned root)."""
    (cache / "metadata").mkdir(parents=True, exist_ok=True)
    (cache / "targets").mkdir(parents=True, exist_ok=True)
    fetcher = DirectoryFetcher(repo_dir)
    updater = Updater(
        str(cache / "metadata"),
        "https://repository.invalid/metadata/",
        str(cache / "targets"),
        "https://repository.invalid/targets/",
        fetcher=fetcher,
        bootstrap=bootstrap,
    )
    return updater, fetcher
