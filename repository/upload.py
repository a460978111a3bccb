"""Server-side acceptance of a publisher's upload: a new version of a delegated role, signed
elsewhere with the publisher's key(s), plus the firmware files it lists.

Every check runs before the first byte is published: the metadata must verify against the
current delegation (keys, threshold, path patterns, exactly the next version, not expired), stay
inside the repository's limits (`repository.limits`: expiry, security counters of new images),
list every published target exactly as published (a published image never changes: 409), and
every uploaded file must match its TargetFile's length and hashes. Then, under the writer lock,
the files go into `targets/` under their consistent-snapshot names, the role's metadata is
written, and snapshot and timestamp are re-signed with the online keys. A refusal leaves the
published folders exactly as they were.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization import DeserializationError

from repository.delegations import validate_delegated_update
from repository.errors import BadInputError, KeyError_, RepositoryError, ThresholdError
from repository.fsutil import atomic_copy_hashed
from repository.limits import Limits
from repository.manager import OtaRepository, VersionFileTaken, metadata_filename
from repository.publishundo import PublishUndo, is_no_space
from repository.targetfiles import published_path, stored_digests, validate_target_path

logger = logging.getLogger(__name__)

_ROLE = re.compile(r"^[A-Za-z0-9_+~-][A-Za-z0-9._+~-]{0,127}\Z")
_TOP_LEVEL = (Root.type, Targets.type, Snapshot.type, Timestamp.type)


class UploadRefused(RepositoryError):
    """An upload the server will not publish; `status` is the HTTP status to answer with."""

    status = 400


class VersionConflict(UploadRefused):
    status = 409


class TargetConflict(UploadRefused):
    """The upload lists a published target path with other bytes or another custom."""

    status = 409


class NotAuthorized(UploadRefused):
    status = 403


class ServerUnavailable(UploadRefused):
    status = 503


class InsufficientStorage(UploadRefused):
    """No space left to store the upload: nothing was published."""

    status = 507


@dataclass(frozen=True)
class UploadResult:
    role: str
    version: int
    targets: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "version": self.version, "targets": self.targets}


class OnlineOnlyRepository(OtaRepository):
    """The server's view of the repository: it can sign only the online roles.

    Any attempt to load a signer for another role (root, targets, a publisher's role) fails
    before a key file is opened, so offline keys never reach the server process.
    """

    def signers_for(self, role: str, keys: Any = None) -> list[Any]:
        if role not in self.config.online_roles:
            raise KeyError_(f"the server holds no key for {role} (only {self.config.online_roles})")
        return super().signers_for(role, keys)


def parse_metadata(data: bytes) -> Metadata[Targets]:
    """Raises:
    UploadRefused: not TUF targets metadata.
    """
    try:
        md = Metadata[Targets].from_bytes(data)
    except (DeserializationError, ValueError, TypeError, KeyError) as e:
        raise UploadRefused(f"metadata is not valid TUF metadata: {e}") from None
    if not isinstance(md.signed, Targets):
        raise UploadRefused("metadata is not targets metadata")
    return md


def _check_delegation(repo: OtaRepository, role: str, md: Metadata[Targets]) -> None:
    """The checks that map to 403/409, with their own messages, before the manager's own.

    Authorization comes first (paths, then signatures): only a publisher who could publish
    learns about version conflicts.
    """
    if role in _TOP_LEVEL:
        raise NotAuthorized(f"{role} is not a delegated role: it is never uploaded")
    try:
        repo.keys_for(role)
    except BadInputError:
        raise NotAuthorized(f"role {role!r} is not delegated by targets") from None
    delegations = repo.current_metadata(Targets.type).signed.delegations
    publisher = repo.publisher_of_bin(role)  # a publisher's hash bin: bound by its paths too
    if (
        delegations is None
        or delegations.roles is None
        or (publisher or role) not in delegations.roles
    ):
        # targets' own (online-keyed) hash bins are refused: never signed, never uploaded
        raise NotAuthorized(f"role {role!r} is not a publisher's delegated role")
    delegated = delegations.roles[publisher or role]
    outside = sorted(p for p in md.signed.targets if not delegated.is_delegated_path(p))
    if outside:
        raise NotAuthorized(f"{role} is not trusted for {', '.join(outside)}")
    try:
        repo.check_threshold(role, md)
    except ThresholdError:
        raise NotAuthorized(
            f"{role} v{md.signed.version} is not signed by enough of the role's keys"
        ) from None
    current = repo.current_metadata(role).signed.version if repo.has_role(role) else 0
    if md.signed.version != current + 1:
        raise VersionConflict(
            f"{role} version {md.signed.version} does not follow the published "
            f"version {current} (expected {current + 1})"
        )
    try:
        validate_delegated_update(repo, role, md)
    except ThresholdError as e:
        raise NotAuthorized(str(e)) from None
    except BadInputError as e:
        raise UploadRefused(str(e)) from None


def _same(a: TargetFile, b: TargetFile) -> bool:
    return a.length == b.length and a.hashes == b.hashes


def _check_published_unchanged(repo: OtaRepository, role: str, md: Metadata[Targets]) -> None:
    """A target path the role lists already keeps its bytes and its custom.

    Devices may hold those bytes, and "version 1.4.2" must mean one image: a publisher who
    needs other bytes publishes a new version. Listing it again unchanged is not a change.

    A path listed before and since removed keeps its bytes too: `targets/` still holds them.

    Raises:
        TargetConflict: a published path with other length or hashes, or another custom.
    """
    before = repo.current_metadata(role).signed.targets if repo.has_role(role) else {}
    for path, tf in sorted(md.signed.targets.items()):
        old = before.get(path)
        if old is None:
            earlier = stored_digests(repo.paths.targets, path)
            if earlier and tf.hashes.get("sha256") not in earlier:
                raise TargetConflict(
                    f"{path} was published before with other bytes: a published image never "
                    "changes, publish a new version"
                )
            continue
        if not _same(old, tf):
            raise TargetConflict(
                f"{path} is published already with other bytes: a published image never "
                "changes, publish a new version"
            )
        if old.unrecognized_fields != tf.unrecognized_fields:
            raise TargetConflict(
                f"{path} is published already with another custom: a published image never "
                "changes, publish a new version"
            )


def _check_limits(repo: OtaRepository, role: str, md: Metadata[Targets]) -> None:
    """Expiry within `max_expiry_days`; every new image's security counter within bounds.

    Raises:
        UploadRefused: a bound is exceeded (400), or the repository's limits are
            misconfigured (503).
    """
    try:
        limits = Limits.from_config(repo.config.extra)
    except BadInputError as e:  # create_app checks it at start: edited since
        logger.error("bad limits in the repository config: %s", e)
        raise ServerUnavailable("the server's limits are misconfigured") from None
    try:
        limits.check_expiry(md.signed.expires, repo.now, f"{role} v{md.signed.version}")
        before = repo.current_metadata(role).signed.targets if repo.has_role(role) else {}
        for path, tf in sorted(md.signed.targets.items()):
            if path not in before:  # published ones are unchanged (checked before)
                limits.check_firmware_custom(tf.custom, path)
    except BadInputError as e:
        raise UploadRefused(str(e)) from None


def _check_files(
    repo: OtaRepository, role: str, md: Metadata[Targets], files: Mapping[str, BinaryIO]
) -> list[str]:
    """Verify uploaded bytes; return the target paths whose files must be stored.

    Raises:
        UploadRefused: a file is not listed, does not match, or a new target has no file.
    """
    listed = md.signed.targets
    for path, tf in listed.items():
        if next(iter(tf.hashes), None) != "sha256":
            raise UploadRefused(f"target {path} must list a sha256 hash first")
    for path, fileobj in files.items():
        if path not in listed:
            raise UploadRefused(f"uploaded file {path} is not listed in the metadata")
        fileobj.seek(0)
        try:
            listed[path].verify_length_and_hashes(fileobj)
        except LengthOrHashMismatchError:
            raise UploadRefused(
                f"uploaded bytes of {path} do not match the length and hashes in the metadata"
            ) from None
    before = repo.current_metadata(role).signed.targets if repo.has_role(role) else {}
    for path, tf in listed.items():
        if path in files or (path in before and _same(before[path], tf)):
            continue
        existing = published_path(repo.paths.targets, tf)
        try:
            with open(existing, "rb") as f:
                tf.verify_length_and_hashes(f)
        except (OSError, LengthOrHashMismatchError):
            raise UploadRefused(f"new or changed target {path} needs its file uploaded") from None
    return sorted(files)


def _check_version_file_free(
    repo: OtaRepository, role: str, md: Metadata[Targets], metadata: bytes
) -> None:
    """The role's versioned file is new, or holds these very bytes (a retried upload).

    Raises:
        VersionConflict: an interrupted publish left other bytes under this version's name; a
            cache may hold them, so they are never rewritten.
    """
    path = repo.paths.metadata / metadata_filename(role, md.signed.version)
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        return
    if existing != metadata:
        raise VersionConflict(
            f"metadata/{path.name} exists with other bytes (left by an interrupted publish) "
            "and is never rewritten: the operator removes it after checking no snapshot "
            "lists it, then upload again"
        )


def _store(
    repo: OtaRepository,
    role: str,
    md: Metadata[Targets],
    metadata: bytes,
    files: Mapping[str, BinaryIO],
    stored: list[str],
    undo: PublishUndo,
) -> None:
    """Write the target files, the role's metadata, snapshot and timestamp (in that order)."""
    for path in stored:
        tf = md.signed.targets[path]
        directory, _, name = path.rpartition("/")
        src = files[path]
        src.seek(0)
        undo.will_store(published_path(repo.paths.targets, tf))
        _, sha256, length = atomic_copy_hashed(src, repo.paths.targets / directory, name)
        if sha256 != tf.hashes["sha256"] or length != tf.length:
            raise UploadRefused(f"{path} changed while it was stored")  # cannot happen
    repo.write(role, md, data=metadata)  # the publisher's exact bytes, not a re-encoding
    repo.publish_snapshot_and_timestamp()


def accept_upload(
    repo: OtaRepository,
    role: str,
    metadata: bytes,
    files: Mapping[str, BinaryIO],
    *,
    publisher: str,
    lock_timeout: float = 30.0,
) -> UploadResult:
    """Publish a publisher-signed new version of `role` with its files, or refuse it whole.

    Args:
        repo: the repository (the server passes an `OnlineOnlyRepository`).
        role: the delegated role name.
        metadata: the exact signed bytes of the new version.
        files: target path -> readable, seekable staged file.
        publisher: who uploaded (for the audit line).
        lock_timeout: seconds to wait for another writer.

    Returns:
        What was published.

    Raises:
        UploadRefused: bad input or beyond the limits (400), not authorized or not signed
            (403), not the next version or a published target changed (409), the server cannot
            sign snapshot/timestamp or write now (503), no disk space (507); a refusal while
            writing removes what was written.
    """
    if not _ROLE.match(role) or ".." in role:
        raise UploadRefused(f"bad role name {role!r}")
    for path in files:
        try:
            validate_target_path(path)
        except BadInputError as e:
            raise UploadRefused(str(e)) from None
    md = parse_metadata(metadata)
    repo.lock_timeout = lock_timeout
    # the server's repository lives as long as its worker: expiry is judged, and snapshot and
    # timestamp are signed, from the time of this upload, not from when the worker started
    repo.now = datetime.now(UTC)
    try:
        with repo.writing("upload") as details:
            _check_delegation(repo, role, md)
            _check_published_unchanged(repo, role, md)
            _check_limits(repo, role, md)
            stored = _check_files(repo, role, md, files)
            _check_version_file_free(repo, role, md, metadata)
            try:  # fail on the online keys before writing anything
                if not repo.signers_for(Snapshot.type) or not repo.signers_for(Timestamp.type):
                    raise ServerUnavailable("the server has no snapshot/timestamp signer")
            except KeyError_ as e:
                logger.error("cannot load online keys: %s", e)
                raise ServerUnavailable("the server cannot sign snapshot/timestamp now") from None
            undo = PublishUndo(repo.paths.metadata)
            try:
                _store(repo, role, md, metadata, files, stored, undo)
            except OSError as e:
                undo.undo()  # nothing published refers to what was written: remove it
                if is_no_space(e):
                    logger.error("upload of %s refused: %s", role, e.strerror)
                    raise InsufficientStorage(
                        "the server's disk is full: nothing was published, retry later"
                    ) from None
                logger.error("upload of %s failed: %s", role, e)
                raise ServerUnavailable("cannot write the repository now") from None
            details.update(
                {
                    "role": role,
                    "publisher": publisher,
                    "targets_added": stored,
                    "version": md.signed.version,
                }
            )
    except UploadRefused:
        raise
    except VersionFileTaken as e:  # a snapshot cannot hit it: it skips taken versions
        raise VersionConflict(str(e)) from None
    except RepositoryError as e:  # lock timeout, corrupt published state
        logger.error("upload of %s failed: %s", role, e)
        raise ServerUnavailable(f"cannot publish now: {e}") from None
    return UploadResult(role, md.signed.version, stored)
