"""Shared by the commands that prepare signing requests: extra signers, printing, --publish."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from securesystemslib.signer import Key
from tuf.api.metadata import Root, Targets

from repository import render, review, staging
from repository.changes import resulting, short
from repository.keys import find_signer, public_key_from_file
from repository.layout import TOP_LEVEL_ROLES
from repository.manager import OtaRepository
from repository.signing import SigningRequest, ThresholdState, content_digest, threshold_states

SIGN_WITH = click.option(
    "--sign-with",
    "sign_with",
    multiple=True,
    metavar="URI",
    help="Signer URI of a key present here to sign the request with now (repeat).",
)
EXPORT = click.option(
    "--export",
    "export_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the request to this file, for holders on other machines.",
)
TRUSTED_ROOT = click.option(
    "--trusted-root",
    "trusted_root",
    envvar="OTA_TRUSTED_ROOT",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Your own pinned copy of a root.json: the review is verified from it (env "
    "OTA_TRUSTED_ROOT). Needed for a request file; defaults to this repository's 1.root.json.",
)
PUBLISH = click.option(
    "--publish", "publish_now", is_flag=True, help="Publish at once if every threshold is met."
)


def pub_keys(paths: Iterable[Path]) -> list[Key]:
    return [public_key_from_file(p) for p in paths]


def add_extra_signers(repo: OtaRepository, uris: Iterable[str], new_keys: Iterable[Key]) -> None:
    """Load each URI as the signer of a key the repository (or this change) lists.

    Raises:
        KeyError_: a URI holds none of those keys.
    """
    uris = list(uris)
    if not uris:
        return
    root = repo.current_metadata(Root.type).signed
    targets = repo.current_metadata(Targets.type).signed
    assert isinstance(root, Root) and isinstance(targets, Targets)
    candidates: dict[str, Key] = dict(root.keys)
    roles: list[str] = list(TOP_LEVEL_ROLES)
    if targets.delegations is not None:
        candidates.update(targets.delegations.keys)
        roles.extend(targets.delegations.roles or {})
    candidates.update({k.keyid: k for k in new_keys})
    for uri in uris:
        signer = find_signer(uri, candidates)
        for role in roles:
            repo.extra_signers.setdefault(role, []).append(signer)


def extend_roles(repo: OtaRepository, names: Iterable[str]) -> None:
    """Make extra signers available to roles the change creates."""
    signers = {id(s): s for lst in repo.extra_signers.values() for s in lst}
    for name in names:
        repo.extra_signers[name] = list(signers.values())


def state_lines(states: list[ThresholdState]) -> list[str]:
    return [
        f"  {s.label}: {len(s.signed)}/{s.threshold}"
        + (" ok" if s.met else f", missing {', '.join(short(k) for k in s.missing)}")
        for s in states
    ]


def request_json(req: SigningRequest, states: list[ThresholdState], stale: str) -> dict[str, Any]:
    return {
        "id": req.id,
        "roles": req.roles,
        "versions": {c.role: c.md.signed.version for c in req.changes},
        "created": req.created,
        "actor": req.actor,
        "summary": req.summary,
        "content_hash": content_digest(req.changes),
        "stale": stale or None,
        "ready": all(s.met for s in states) and not stale,
        "thresholds": [
            {
                "role": s.role,
                "label": s.label,
                "have": len(s.signed),
                "need": s.threshold,
                "signed": s.signed,
                "missing": s.missing,
            }
            for s in states
        ],
    }


def review_lines(req: SigningRequest, context: dict[str, Any], stale: str = "") -> list[str]:
    """The review of `req` against the verified `context` (none for a stale request: it can
    only be refused)."""
    if stale:
        return [f"content hash: {content_digest(req.changes)}"]
    return review.review_request(req, review.previous_versions(req, context))


def echo_request(
    req: SigningRequest, states: list[ThresholdState], lines: list[str], stale: str = ""
) -> None:
    """Print a request: the review computed here (never the file's own summary), what each
    role says afterwards, and who has signed."""
    click.echo(f"request {render.plain(req.id)}")
    for line in lines:
        click.echo(line if line.startswith("content hash") else f"  {line}")
    click.echo("after this change:")
    for change in req.changes:
        for line in resulting(change.role, change.md.signed):
            click.echo(f"  {line}")
    click.echo("signatures:")
    for line in state_lines(states):
        click.echo(line)
    if stale:
        click.echo(f"STALE: {stale}")


def finish(
    repo: OtaRepository,
    make: Callable[[], SigningRequest],
    publish_now: bool,
    warnings: Iterable[str] = (),
    export_to: Path | None = None,
    *,
    allow_single_root_key: bool = False,
) -> None:
    """Stage the request `make` builds (under the writer lock), print it, maybe publish it."""
    with repo.writing("stage-request"):
        req = make()
    if export_to is not None:
        staging.export(repo, req.id, export_to)
        click.echo(f"exported {req.id} to {export_to}")
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    context = staging.trusted_context(repo, req)
    states = threshold_states(req, context)
    echo_request(req, states, review_lines(req, context))
    if publish_now and all(s.met for s in states):
        staging.publish(repo, req.id, allow_single_root_key=allow_single_root_key)
        click.echo(f"published {req.id}")
    elif publish_now:
        raise click.ClickException(f"staged {req.id} but not published: thresholds are not met yet")
    else:
        click.echo(
            f"next: each holder reviews and runs 'ota-repo sign {req.id} --key URI --expect "
            f"{content_digest(req.changes)}' (or signs an exported copy), then "
            f"'ota-repo publish {req.id}'"
        )
