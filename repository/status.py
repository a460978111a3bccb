"""What `ota-repo status` shows: every role's version, expiry, keys, threshold and signatures."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from tuf.api.metadata import Metadata, Root, Targets

from repository.errors import BadInputError
from repository.manager import OtaRepository

# Days before expiry that `ota-repo status` starts warning, per role: offline roles need time
# for a signing ceremony; snapshot and timestamp warn only if `ota-repo refresh` stopped
# running. A delegated role or bin uses its own name's entry, else the one of "targets".
DEFAULT_EXPIRY_WARNING_DAYS = {"root": 60.0, "targets": 14.0, "snapshot": 1.0, "timestamp": 0.25}


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


def warning_days(
    repo: OtaRepository, overrides: dict[str, float] | None = None
) -> dict[str, float]:
    """Lead times: defaults, the config's `expiry_warning_days`, then `overrides`.

    Raises:
        BadInputError: a lead time is not a number of days >= 0.
    """
    result = dict(DEFAULT_EXPIRY_WARNING_DAYS)
    configured = repo.config.extra.get("expiry_warning_days", {})
    for source in (configured, overrides or {}):
        if not isinstance(source, dict):
            raise BadInputError("expiry_warning_days in the repository config must be an object")
        for role, days in source.items():
            if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
                raise BadInputError(f"expiry warning {role}={days!r}: a number of days >= 0")
            result[role] = float(days)
    return result


def expiry_warnings(rows: list[RoleStatus], now: datetime, lead: dict[str, float]) -> list[str]:
    """One line per role that expires within its lead time (or has expired)."""
    warnings = []
    for r in rows:
        days = lead.get(r.role, lead["targets"] if r.delegated_by == "targets" else 0.0)
        expires = datetime.fromisoformat(r.expires)
        if expires <= now:
            warnings.append(f"{r.role} v{r.version} EXPIRED on {r.expires}: devices refuse it")
        elif expires <= now + timedelta(days=days):
            left = (expires - now).total_seconds() / 86400
            warnings.append(
                f"{r.role} v{r.version} expires in {left:.1f} days ({r.expires}), within its "
                f"{days:g}-day warning: renew it now"
            )
    return warnings
