"""Option values shared by `init` and `init-ceremony`, turned into library arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repository.cli._base import fail
from repository.keys import public_key_from_file
from repository.layout import TOP_LEVEL_ROLES
from repository.limits import DEFAULT_MAX_EXPIRY_DAYS


def expiry_days(values: tuple[str, ...]) -> dict[str, int]:
    """`--expiry ROLE=DAYS` (repeated) as a mapping; a bad item is a usage error.

    DAYS is at most `DEFAULT_MAX_EXPIRY_DAYS` (`repository.limits`): metadata signed for longer
    would outlive any compromise of its key.
    """
    result = {}
    for item in values:
        role, _, days = item.partition("=")
        if role not in TOP_LEVEL_ROLES or not days.isascii() or not days.isdigit() or int(days) < 1:
            fail(
                f"--expiry takes ROLE=DAYS with ROLE one of {', '.join(TOP_LEVEL_ROLES)}: {item!r}"
            )
        if int(days) > DEFAULT_MAX_EXPIRY_DAYS:
            fail(f"--expiry {item}: at most {DEFAULT_MAX_EXPIRY_DAYS} days")
        result[role] = int(days)
    return result


def production_keys(
    root_keys: tuple[Path, ...],
    root_threshold: int,
    targets_keys: tuple[Path, ...],
    targets_threshold: int,
    online: dict[str, tuple[Path | None, str | None]],
) -> dict[str, Any]:
    """Public key files and thresholds as the keyword arguments of `production_setup`.

    `online` maps snapshot and timestamp to (public key file, signer URI).
    """
    missing = [role for role, (key, uri) in online.items() if not (key and uri)]
    if missing:
        fail(
            f"production init needs --{missing[0]}-key and --{missing[0]}-uri "
            "(or --dev for a demo repository)"
        )
    return {
        "root_keys": [public_key_from_file(p) for p in root_keys],
        "root_threshold": root_threshold,
        "targets_keys": [public_key_from_file(p) for p in targets_keys],
        "targets_threshold": targets_threshold,
        "online": {
            role: (public_key_from_file(key), uri)
            for role, (key, uri) in online.items()
            if key and uri
        },
    }
