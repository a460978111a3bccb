"""`POST /api/v1/publish`: a publisher uploads a signed new version of its role and its files.

multipart/form-data: field `role`, file part `metadata` (exact signed bytes), and one file part
`target` per new or changed target, its filename being the target path. The checks and the
publish itself are in `repository.upload`; this view handles HTTP: size limits, streaming to
the private staging folder, the optional upload token, and the answer.
"""

from __future__ import annotations

from typing import BinaryIO

from flask import Blueprint, Response, jsonify, request

from repository.errors import RepositoryError
from repository.publishundo import is_no_space
from repository.server.app import state
from repository.server.auth import authenticate_uploader
from repository.server.views.guard import auth_failed, throttled
from repository.upload import UploadRefused, accept_upload

bp = Blueprint("uploads", __name__)


def _refuse(status: int, message: str, **audit: object) -> tuple[Response, int]:
    st = state()
    st.audit.record(
        "upload-refused", status=status, error=message, remote=request.remote_addr or "", **audit
    )
    return jsonify({"error": message}), status


@bp.post("/api/v1/publish")
def publish() -> tuple[Response, int]:
    st = state()
    if not st.settings.uploads:
        return jsonify({"error": "not found"}), 404
    publisher = "anonymous"
    allowed_roles: tuple[str, ...] | None = None
    if st.settings.upload_tokens:
        refused = throttled()
        if refused is not None:
            return refused
        uploader = authenticate_uploader(request.environ, st.registry.get())
        if uploader is None:
            return auth_failed("/api/v1/publish")
        publisher, allowed_roles = uploader.name, uploader.roles
    if request.mimetype != "multipart/form-data":
        return _refuse(415, "uploads are multipart/form-data", publisher=publisher)
    if not st.upload_slots.acquire(blocking=False):
        response = jsonify({"error": "busy with other uploads, retry later"})
        response.headers["Retry-After"] = "10"
        return response, 503
    try:
        return _receive(publisher, allowed_roles)
    except OSError as e:  # staging the body: the disk is full, or cannot be written
        if is_no_space(e):
            return _refuse(507, "the server's disk is full, retry later", publisher=publisher)
        raise
    finally:
        st.upload_slots.release()


def _bin_of(role: str, allowed_roles: tuple[str, ...]) -> bool:
    """Whether `role` is a hash bin of a publisher's role the token may upload (the bins'
    signatures and paths are checked as the role's are)."""
    try:
        return state().repo.publisher_of_bin(role) in allowed_roles
    except RepositoryError:
        return False


def _receive(publisher: str, allowed_roles: tuple[str, ...] | None) -> tuple[Response, int]:
    """Parse the body into the staging folder, check it and publish it."""
    st = state()
    role = request.form.get("role", "")  # parses the body: 413 if it is too large
    if not role:
        return _refuse(400, "the upload has no role field", publisher=publisher)
    if allowed_roles is not None and role not in allowed_roles and not _bin_of(role, allowed_roles):
        return _refuse(403, f"this token may not upload {role}", publisher=publisher, role=role)
    part = request.files.get("metadata")
    if part is None:
        return _refuse(400, "the upload has no metadata part", publisher=publisher, role=role)
    metadata = part.stream.read(st.settings.max_metadata_bytes + 1)
    if len(metadata) > st.settings.max_metadata_bytes:
        return _refuse(413, "metadata too large", publisher=publisher, role=role)
    files: dict[str, BinaryIO] = {}
    for target in request.files.getlist("target"):
        name = target.filename or ""
        if not name or name in files:
            return _refuse(
                400,
                "every target part needs a distinct filename (its target path)",
                publisher=publisher,
                role=role,
            )
        files[name] = target.stream  # type: ignore[assignment]
    try:
        with st.upload_lock:
            result = accept_upload(
                st.repo,
                role,
                metadata,
                files,
                publisher=publisher,
                lock_timeout=st.settings.lock_timeout,
            )
    except UploadRefused as e:
        return _refuse(e.status, str(e), publisher=publisher, role=role)
    st.audit.record(
        "upload",
        status=201,
        publisher=publisher,
        role=result.role,
        version=result.version,
        targets=result.targets,
        remote=request.remote_addr or "",
    )
    return jsonify(result.to_dict()), 201
