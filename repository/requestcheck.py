"""What a signing request may list, beyond signatures: checked right before it is published.

Signatures and thresholds say *who* approved a change; these checks say the change itself is
publishable: every new or changed target has a safe path and its exact bytes in `targets/`, and a
delegated role lists only paths inside its delegation and delegates no further.
"""

from __future__ import annotations

from typing import Any

from tuf.api.metadata import DelegatedRole, Metadata, Role, Root, SuccinctRoles, Targets

from repository.errors import BadInputError
from repository.manager import OtaRepository
from repository.signing import SigningRequest
from repository.targetfiles import validate_target_path, verify_published_file


def _published_targets(repo: OtaRepository, role: str, first: bool) -> dict[str, Any]:
    if first or not repo.has_role(role):
        return {}
    signed = repo.current_metadata(role).signed
    return dict(signed.targets) if isinstance(signed, Targets) else {}


def _inside(delegated: Role, role: str, path: str) -> bool:
    if isinstance(delegated, DelegatedRole):
        return bool(delegated.is_delegated_path(path))
    if isinstance(delegated, SuccinctRoles):
        return bool(delegated.get_role_for_target(path) == role)
    return False


def check_content(repo: OtaRepository, req: SigningRequest, *, first: bool = False) -> None:
    """Raises:
    BadInputError: a target path is unsafe, outside its role's delegation, or its file is
        missing from `targets/` or does not match; a delegated role delegates further.
    """
    new_targets = req.change(Targets.type)
    parent: Metadata[Any] | None = new_targets.md if new_targets else None
    if parent is None and not first:
        parent = repo.current_metadata(Targets.type)
    for change in req.changes:
        signed = change.md.signed
        if isinstance(signed, Root) or not isinstance(signed, Targets):
            continue
        delegated: Role | None = None
        if change.role != Targets.type:
            if signed.delegations is not None:
                raise BadInputError(f"{change.role} may not delegate further")
            assert parent is not None and isinstance(parent.signed, Targets)
            try:
                delegated = parent.signed.get_delegated_role(change.role)
            except ValueError as e:
                raise BadInputError(f"targets does not delegate to {change.role}") from e
        before = _published_targets(repo, change.role, first)
        for path, target in signed.targets.items():
            validate_target_path(path)
            if delegated is not None and not _inside(delegated, change.role, path):
                raise BadInputError(f"{change.role} may not list {path} (outside its delegation)")
            if before.get(path) == target:
                continue
            verify_published_file(repo.paths.targets, target)
