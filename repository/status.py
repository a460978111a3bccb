"""What `ota-repo status` shows: every role's version, expiry, keys, threshold and signatures."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from tuf.api.metadata import Metadata, Root, Targets

from repository.manager import OtaRepository


@dataclass
class RoleStatus:
    role: str
    delegated_by: str
    version: int
    expires: str
    threshold: int
    keyids: list[str]
    signed_by: list[str]
    paths: list[str] | None
    targets: int | None

    @property
    def threshold_met(self) -> bool:
        return len(self.signed_by) >= self.threshold


def _status(role: str, md: Metadata[Any], delegator: Root | Targets, by: str) -> RoleStatus:
    result = delegator.get_verification_result(role, md.signed_bytes, md.signatures)
    paths = None
    if isinstance(delegator, Targets) and delegator.delegations and delegator.delegations.roles:
        paths = delegator.delegations.roles[role].paths
    return RoleStatus(
        role=role,
        delegated_by=by,
        version=md.signed.version,
        expires=md.signed.expires.isoformat(),
        threshold=result.threshold,
        keyids=sorted([*result.signed, *result.unsigned]),
        signed_by=sorted(result.signed),
        paths=paths,
        targets=len(md.signed.targets) if isinstance(md.signed, Targets) else None,
    )


def repository_status(repo: OtaRepository) -> list[RoleStatus]:
    root_md = repo.current_metadata("root")
    root = root_md.signed
    assert isinstance(root, Root)
    rows = [_status(role, repo.current_metadata(role), root, "root") for role in root.roles]
    targets = repo.current_metadata("targets").signed
    assert isinstance(targets, Targets)
    if targets.delegations and targets.delegations.roles:
        for name in targets.delegations.roles:
            if repo.has_role(name):
                rows.append(_status(name, repo.current_metadata(name), targets, "targets"))
    if targets.delegations and targets.delegations.succinct_roles:  # hash bins
        for name in targets.delegations.succinct_roles.get_roles():
            if repo.has_role(name):
                rows.append(_status(name, repo.current_metadata(name), targets, "targets"))
    return rows


def status_json(rows: list[RoleStatus], now: datetime) -> dict[str, Any]:
    return {
        "roles": [
            {
                **asdict(r),
                "threshold_met": r.threshold_met,
                "expired": datetime.fromisoformat(r.expires) <= now,
            }
            for r in rows
        ]
    }
