"""The key ceremony: a production repository whose first root and targets are a signing request.

`init_production` needs every offline signature in one process (`--sign-with`). Holders who
each keep their own key, passphrase or token sign the ceremony request one after another, on
their own machines if they like; `ota-repo publish` then writes root v1 and targets v1, and
snapshot and timestamp v1 with the online keys. Until then nothing is published.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Root, Targets

from repository import audit
from repository.create import production_setup
from repository.fsutil import atomic_write
from repository.layout import save_config
from repository.signing import RoleChange, SigningRequest, content_digest, validate


def stage_init(
    root_dir: Path,
    *,
    root_keys: list[Key],
    root_threshold: int,
    targets_keys: list[Key],
    targets_threshold: int,
    online: dict[str, tuple[Key, str]],
    allow_single_root_key: bool = False,
    expiry_days: dict[str, int] | None = None,
) -> SigningRequest:
    """Create the private state of a repository and stage root v1 + targets v1 for signing.

    Raises:
        BadInputError: a repository exists, bad keys or thresholds, a root threshold below 2
            without `allow_single_root_key`, or an online role without key and URI.
        KeyError_: an online URI does not hold its key.
    """
    paths, root, config = production_setup(
        root_dir,
        root_keys=root_keys,
        root_threshold=root_threshold,
        targets_keys=targets_keys,
        targets_threshold=targets_threshold,
        online=online,
        allow_single_root_key=allow_single_root_key,
        expiry_days=expiry_days,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    root.version = 1
    root.expires = now + timedelta(days=config.expiry_for("root"))
    targets = Targets(version=1, expires=now + timedelta(days=config.expiry_for("targets")))
    changes = [
        RoleChange(Root.type, 0, Metadata(root)),
        RoleChange(Targets.type, 0, Metadata(targets)),
    ]
    req = SigningRequest(
        f"root-v1-{content_digest(changes)[:12]}",
        now.isoformat(),
        audit.actor(),
        ["ceremony: root v1 and targets v1 of a new repository"]
        + [
            f"root: {r} keys {', '.join(k[:12] for k in root.roles[r].keyids)} threshold "
            f"{root.roles[r].threshold}"
            for r in root.roles
        ],
        changes,
        {Root.type: changes[0].md},
    )
    validate(req, {})
    paths.make_dirs()
    save_config(paths, config)
    atomic_write(paths.staging / f"{req.id}.json", req.to_bytes(), mode=0o600)
    return req
