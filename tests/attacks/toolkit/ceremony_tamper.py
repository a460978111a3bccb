"""The ceremony attacker's tools: what a shell on the update server, a man in the middle of a
request file, or a single key holder can do to a signing request, without the repository code.

Requests are edited as JSON (staged in `.ota/staging/<id>.json`, or an exported file) and their
id is recomputed the way the repository names requests (`<role>-v<version>-<12 hex>` over the
signed bytes of every change), so an edit is not caught merely by a stale id. Signatures are
made with the holders' real private key files; a publish "behind the repository's back" writes
metadata files directly with whatever keys the attacker holds (the online ones, or their own).
Nothing here imports `repository/`: the attacker does not run the product's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

from tests.attacks.toolkit.device import Outcome
from tests.helpers.repo import BIN, PASSPHRASE, cli_env, published

# Bytes a terminal acts on: ESC (CSI and OSC sequences), backspace, BEL (ends an OSC title).
RAW_CONTROL = ("\x1b", "\x08", "\x07")
ESCAPE_SEQUENCES = "\x1b[2J\x1b[H"
OSC_TITLE = "\x1b]0;review ok\x07"

# -- the real CLI, from any working directory ------------------------------------------------------


def ota_repo_in(cwd: Path, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ota-repo --repo REPO ARGS` run from `cwd` (a holder's working directory), never raising."""
    return subprocess.run(
        [str(BIN / "ota-repo"), "--repo", str(repo), *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def ota_repo_tty(repo: Path, *args: str) -> str:
    """Everything `ota-repo` writes (stdout and stderr) when both are a terminal, as a holder
    sees it. Through a pipe click strips CSI sequences itself; on a terminal nothing does."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "ota-repo"), "--repo", str(repo), *args],
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    chunks = []
    try:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main)
        proc.wait(timeout=120)
    return b"".join(chunks).decode("utf-8", "replace")


def outcome(proc: subprocess.CompletedProcess[str]) -> Outcome:
    """An `ota-repo` run as the red-team recorder's `Outcome` (for `Attempt.refused`)."""
    args = proc.args[3:] if isinstance(proc.args, list) else ()
    return Outcome(tuple(str(a) for a in args), proc.returncode, proc.stdout, proc.stderr)


class PublishedRepository:
    """What `attack(...)` watches when the target is the repository rather than a device: every
    published file (`metadata/`, `targets/`); nothing may change while the attack runs."""

    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = repo_dir
        self.name = f"repository {repo_dir.name}"

    def protected(self) -> dict[str, Any]:
        return {f"published:{k}": v for k, v in published(self.repo_dir).items()}

    def events(self) -> list[dict[str, Any]]:
        return []

    def verify_log(self) -> None:
        """A repository has no device event log to check."""


# -- request files ---------------------------------------------------------------------------------


def load_request(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def save_request(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    path.chmod(0o600)


def signed_bytes(md: dict[str, Any]) -> bytes:
    """The canonical JSON of `md["signed"]`: the bytes a signature covers."""
    canonical = encode_canonical(md["signed"])
    assert canonical is not None
    return canonical.encode()


def request_id(obj: dict[str, Any]) -> str:
    """The id the repository gives these changes: first role, its version, and 12 hex of
    SHA-256 over role NUL signed-bytes NUL of every change (repository.signing.content_digest)."""
    h = hashlib.sha256()
    for change in obj["changes"]:
        h.update(change["role"].encode() + b"\0" + signed_bytes(change["metadata"]) + b"\0")
    first = obj["changes"][0]
    return f"{first['role']}-v{first['metadata']['signed']['version']}-{h.hexdigest()[:12]}"


def change(obj: dict[str, Any], role: str) -> dict[str, Any]:
    """The new `signed` body of `role` in a request."""
    for entry in obj["changes"]:
        if entry["role"] == role:
            signed: dict[str, Any] = entry["metadata"]["signed"]
            return signed
    raise AssertionError(f"request {obj['id']} does not change {role}")


def edit_file(path: Path, edit: Callable[[dict[str, Any]], None], *, rebind: bool = True) -> str:
    """Edit an exported request file in place; with `rebind`, give it the id of its new content.

    Returns:
        The request id the file now carries.
    """
    obj = load_request(path)
    edit(obj)
    if rebind:
        obj["id"] = request_id(obj)
    save_request(path, obj)
    return str(obj["id"])


def restage(repo_dir: Path, req_id: str, edit: Callable[[dict[str, Any]], None]) -> str:
    """A shell on the server edits a staged request and files it under its new id.

    Returns:
        The new request id (what `ota-repo requests` now lists).
    """
    staging = repo_dir / ".ota" / "staging"
    old = staging / f"{req_id}.json"
    obj = load_request(old)
    edit(obj)
    obj["id"] = request_id(obj)
    old.unlink()
    save_request(staging / f"{obj['id']}.json", obj)
    return str(obj["id"])


# -- keys ------------------------------------------------------------------------------------------


def key_dict(pub: Path) -> dict[str, Any]:
    """The TUF key of a `.pub` file (keytype, scheme, keyval), without its keyid."""
    data = json.loads(pub.read_text())
    return {k: data[k] for k in ("keytype", "scheme", "keyval")}


def keyid_of(key: dict[str, Any]) -> str:
    """The canonical keyid: SHA-256 of the canonical JSON of keytype, scheme and keyval."""
    canonical = encode_canonical({k: key[k] for k in ("keytype", "scheme", "keyval")})
    assert canonical is not None
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_pub(dest: Path, key: dict[str, Any]) -> Path:
    """A `.pub` file as `ota-repo key generate` writes them, with the keyid of `key`."""
    dest.write_text(json.dumps({**key, "keyid": keyid_of(key)}, indent=2, sort_keys=True) + "\n")
    return dest


def upper_hex_copy(pub: Path, dest: Path) -> Path:
    """The same ed25519 key with its hex in upper case: a new keyid for the same key."""
    key = key_dict(pub)
    key["keyval"] = {"public": key["keyval"]["public"].upper()}
    return write_pub(dest, key)


def extra_field_copy(pub: Path, dest: Path) -> Path:
    """The same key with one more `keyval` field: a new keyid for the same key."""
    key = key_dict(pub)
    key["keyval"] = {**key["keyval"], "comment": "second copy"}
    return write_pub(dest, key)


def private_signer(keys_dir: Path, name: str, *, keyid: str | None = None) -> CryptoSigner:
    """The signer of `keys_dir/NAME.key` (encrypted PKCS#8); its signatures carry `keyid`
    (default: the key's own), which is how an attacker signs under another key's id."""
    private = load_pem_private_key(
        (keys_dir / f"{name}.key").read_bytes(), password=PASSPHRASE.encode()
    )
    key = key_dict(keys_dir / f"{name}.pub")
    public = SSlibKey.from_dict(keyid or keyid_of(key), dict(key))
    return CryptoSigner(private, public)


def add_signature(md: dict[str, Any], signer: CryptoSigner, *, keyid: str | None = None) -> None:
    """Append `signer`'s signature over `md["signed"]`, recorded under `keyid`."""
    sig = signer.sign(signed_bytes(md))
    md["signatures"].append({"keyid": keyid or sig.keyid, "sig": sig.signature})


# -- publishing behind the repository's back -------------------------------------------------------


def _read(repo_dir: Path, name: str) -> Metadata[Any]:
    return Metadata.from_bytes((repo_dir / "metadata" / name).read_bytes())


def _write(repo_dir: Path, md: Metadata[Any], name: str) -> None:
    (repo_dir / "metadata" / name).write_bytes(md.to_bytes())


def store_target(repo_dir: Path, path: str, data: bytes, custom: dict[str, Any]) -> TargetFile:
    """Put `data` where a consistent-snapshot client fetches `path` (`dir/<sha256>.name`)."""
    target = TargetFile.from_data(path, data, ["sha256"])
    target.unrecognized_fields["custom"] = custom
    folder, _, name = path.rpartition("/")
    dest = repo_dir / "targets" / folder / f"{target.hashes['sha256']}.{name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return target


def publish_behind(
    repo_dir: Path,
    *,
    role: str,
    role_signer: CryptoSigner,
    snapshot_signer: CryptoSigner,
    timestamp_signer: CryptoSigner,
    files: dict[str, tuple[bytes, dict[str, Any]]],
) -> None:
    """Write the next version of targets role `role` listing `files` (path -> bytes, custom),
    then snapshot and timestamp, straight into `metadata/`, signed with the given keys."""
    expires = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    timestamp = _read(repo_dir, "timestamp.json")
    snapshot = _read(repo_dir, f"{timestamp.signed.snapshot_meta.version}.snapshot.json")
    meta = snapshot.signed.meta
    current = meta.get(f"{role}.json")
    if current is not None:
        md = _read(repo_dir, f"{current.version}.{role}.json")
    else:
        md = Metadata(Targets(version=1))
        md.signed.version = 0  # the role's first version is 1
    md.signed.version += 1
    md.signed.expires = expires
    for path, (data, custom) in files.items():
        md.signed.targets[path] = store_target(repo_dir, path, data, custom)
    md.signatures.clear()
    md.sign(role_signer)
    _write(repo_dir, md, f"{md.signed.version}.{role}.json")
    snap = Metadata(Snapshot(version=snapshot.signed.version + 1, expires=expires, meta=dict(meta)))
    snap.signed.meta[f"{role}.json"] = MetaFile(md.signed.version)
    snap.sign(snapshot_signer)
    _write(repo_dir, snap, f"{snap.signed.version}.snapshot.json")
    ts = Metadata(
        Timestamp(
            version=timestamp.signed.version + 1,
            expires=expires,
            snapshot_meta=MetaFile(snap.signed.version),
        )
    )
    ts.sign(timestamp_signer)
    _write(repo_dir, ts, "timestamp.json")


def mirror_of(repo_dir: Path, dest: Path, *, next_root: dict[str, Any] | None = None) -> Path:
    """The attacker's mirror: a copy of the published repository, with `next_root` (a root
    metadata object as a request carries it, signatures and all) as the next N.root.json."""
    shutil.copytree(repo_dir / "metadata", dest / "metadata")
    shutil.copytree(repo_dir / "targets", dest / "targets")
    if next_root is not None:
        version = next_root["signed"]["version"]
        (dest / "metadata" / f"{version}.root.json").write_text(json.dumps(next_root))
    return dest


class FolderSource:
    """`files` for an `AttackServer` serving a repository folder as it is on disk right now."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.files = self  # the AttackServer reads `repo.files.get(path)`

    def get(self, path: str) -> bytes | None:
        top = path.split("/", 1)[0]
        full = (self.folder / path).resolve()
        if top not in ("metadata", "targets") or not full.is_relative_to(self.folder):
            return None
        try:
            return full.read_bytes() if full.is_file() else None
        except OSError:
            return None


def image(version: str) -> bytes:
    """Firmware bytes that pass the lab device's health check."""
    return f"GOOD ceremony lab firmware {version}\n".encode() * 200


def evil_image(version: str) -> bytes:
    """The attacker's build: boots fine, so only the ceremony can stop it."""
    return f"GOOD but the attacker's firmware {version}\n".encode() * 200
