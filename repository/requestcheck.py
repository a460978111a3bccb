"""What a signing request may list, beyond signatures: checked right before it is published.

Signatures and thresholds say *who* approved a change; these checks say the change itself is
publishable: every new or changed target has a safe path and its exact bytes in `targets/`, and a
delegated role lists only paths inside its delegation and delegates no further.
"""

from __future__ import annotations

from typing import Any

from tuf.api.metadata import DelegatedRole, Metadata, Role, Root, SuccinctRoles, Targets

from repository import hashbins
from repository.errors import BadInputError
from repository.manager import OtaRepository
from repository.signing import SigningRequest, delegator_name
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


def _bin_owner(
    repo: OtaRepository, req: SigningRequest, role: str, first: bool
) -> tuple[str, Targets] | None:
    """The publisher's role (name, and its new or published version) whose hash bin `role` is."""
    name = delegator_name(req, role, {})
    if name == Targets.type and not first:
        name = repo.publisher_of_bin(role) or Targets.type
    if name in (Targets.type, Root.type):
        return None
    change = req.change(name)
    signed = change.md.signed if change is not None else repo.targets(name)
    assert isinstance(signed, Targets)
    return name, signed


def _check_bins_present(
    repo: OtaRepository, req: SigningRequest, role: str, signed: Targets, first: bool
) -> None:
    """A role that delegates to bins publishes only with every bin (new here, or published)."""
    bins = hashbins.bins_of(signed)
    assert bins is not None
    missing = [
        b for b in bins.get_roles() if req.change(b) is None and (first or not repo.has_role(b))
    ]
    if missing:
        raise BadInputError(f"{role} delegates to hash bins without metadata: {missing[0]}")


def check_content(repo: OtaRepository, req: SigningRequest, *, first: bool = False) -> None:
    """Raises:
    BadInputError: a target path is unsafe, outside its role's delegation, or its file is
        missing from `targets/` or does not match; a delegated role delegates further.
    """
    new_targets = req.change(Targets.type)
    parent: Metadata[Any] | None = new_targets.md if new_targets else None
    if parent is None and not first:
        parent = repo.current_metadata(Targets.type)
    if new_targets is not None:
        assert isinstance(new_targets.md.signed, Targets)
        hashbins.check_no_online_bins(new_targets.md.signed)
    for change in req.changes:
        signed = change.md.signed
        if isinstance(signed, Root) or not isinstance(signed, Targets):
            continue
        delegated: Role | None = None
        bounds: Role | None = None  # a publisher's bin: its publisher's paths bound it too
        if change.role != Targets.type:
            assert parent is not None and isinstance(parent.signed, Targets)
            if parent.signed.delegations is not None:
                hashbins.check_no_online_bins(parent.signed)
            owner = _bin_owner(repo, req, change.role, first)
            try:
                if owner is not None:
                    delegated = owner[1].get_delegated_role(change.role)
                    bounds = parent.signed.get_delegated_role(owner[0])
                else:
                    delegated = parent.signed.get_delegated_role(change.role)
            except ValueError as e:
                raise BadInputError(f"targets does not delegate to {change.role}") from e
            if signed.delegations is not None:
                keys = parent.signed.delegations.keys if parent.signed.delegations else {}
                if owner is not None or not isinstance(delegated, DelegatedRole):
                    raise BadInputError(f"{change.role} may not delegate further")
                hashbins.check_publisher_delegation(change.role, signed, delegated, keys)
                _check_bins_present(repo, req, change.role, signed, first)
        before = _published_targets(repo, change.role, first)
        for path, target in signed.targets.items():
            validate_target_path(path)
            inside = [r for r in (delegated, bounds) if r is not None]
            if any(not _inside(r, change.role, path) for r in inside):
                raise BadInputError(f"{change.role} may not list {path} (outside its delegation)")
            if before.get(path) == target:
                continue
            verify_published_file(repo.paths.targets, target)
