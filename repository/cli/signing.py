"""Signing requests: list, show, sign (here or on another machine), export, import, publish."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from repository import staging
from repository.cli._base import Context, cli, emit, pass_ctx
from repository.cli._reqfmt import (
    TRUSTED_ROOT,
    echo_request,
    request_json,
    review_lines,
    state_lines,
)
from repository.errors import BadInputError
from repository.signing import SigningRequest, content_digest, threshold_states


def _is_file(ref: str) -> bool:
    """A request FILE is named with a '/' or '.json'; anything else is a staged request id, so
    a file planted in the working directory under an id's name is never read."""
    return "/" in ref or ref.endswith(".json")


def _load_for_review(
    ctx: Context, ref: str, trusted_root: Path | None
) -> tuple[SigningRequest, dict[str, Any], str]:
    """The request, the verified published state to review it against, and why it is stale."""
    if _is_file(ref):
        req, context = staging.load_file(Path(ref), trusted_root)
        return req, context, ""
    repo = ctx.open()
    req = staging.load(repo, ref)
    stale = staging.stale_reason(repo, req) or ""
    if stale:
        return req, req.context, stale
    return req, staging.trusted_context(repo, req, trusted_root), ""


@cli.command("requests")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_requests(ctx: Context, as_json: bool) -> None:
    """Pending signing requests with have/need per threshold and the keys still missing."""
    rows = staging.pending(ctx.open())
    data = []
    lines = []
    for req, note, states in rows:
        if req is None:
            data.append({"error": note})
            lines.append(f"BROKEN {note}")
            continue
        data.append(request_json(req, states, note))
        ready = "READY" if all(s.met for s in states) and not note else "pending"
        lines.append(f"{req.id} [{ready}] {', '.join(req.roles)}")
        lines.extend(state_lines(states))
        if note:
            lines.append(f"  STALE: {note}")
    emit({"requests": data}, as_json, "\n".join(lines) if lines else "no pending requests")


@cli.group("request")
def request_group() -> None:
    """Show, export, import or discard one signing request."""


@request_group.command("show")
@click.argument("ref")
@TRUSTED_ROOT
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def request_show(ctx: Context, ref: str, trusted_root: Path | None, as_json: bool) -> None:
    """Review what a request (ID here, or an exported FILE) changes, and who has signed.

    The review is computed here from the metadata, verified from your trusted root; sign with
    the content hash it prints ('ota-repo sign REF --key URI --expect HASH').
    """
    req, context, stale = _load_for_review(ctx, ref, trusted_root)
    states = threshold_states(req, context)
    lines = review_lines(req, context, stale)
    if as_json:
        data = request_json(req, states, stale)
        data["review"] = lines[1:]
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        echo_request(req, states, lines, stale)


@request_group.command("export")
@click.argument("request_id")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def request_export(ctx: Context, request_id: str, dest: Path) -> None:
    """Write request REQUEST_ID to DEST, one file to carry to a key holder."""
    req = staging.export(ctx.open(), request_id, dest)
    click.echo(f"exported {req.id} to {dest}")


@request_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def request_import(ctx: Context, file: Path) -> None:
    """Merge the signatures of FILE (signed elsewhere) into its pending request."""
    repo = ctx.open()
    req, added = staging.import_signatures(repo, file)
    states = threshold_states(req, staging.published_context(repo))
    click.echo(
        f"imported {len(added)} signature(s) into {req.id}: {', '.join(added) or 'none new'}"
    )
    for line in state_lines(states):
        click.echo(line)


@request_group.command("discard")
@click.argument("request_id")
@pass_ctx
def request_discard(ctx: Context, request_id: str) -> None:
    """Drop a pending request; nothing published changes."""
    staging.discard(ctx.open(), request_id)
    click.echo(f"discarded {request_id}")


@cli.command("sign")
@click.argument("ref")
@click.option("--key", "uri", required=True, help="Signer URI of your key (encfile:, hsm:, ...).")
@click.option(
    "--expect",
    metavar="HASH",
    help="The content hash you reviewed ('ota-repo request show'): anything else is refused.",
)
@TRUSTED_ROOT
@pass_ctx
def sign_cmd(
    ctx: Context, ref: str, uri: str, expect: str | None, trusted_root: Path | None
) -> None:
    """Review request REF (a request ID here, or an exported request FILE) and sign it.

    Signs only the content whose hash you give with --expect (or confirm when asked). Signing
    a FILE needs no repository: carry it back and run 'ota-repo request import'.
    """
    req, context, stale = _load_for_review(ctx, ref, trusted_root)
    if stale:
        raise BadInputError(f"request {req.id} is stale: {stale}")
    echo_request(req, threshold_states(req, context), review_lines(req, context))
    if expect is None:
        if not sys.stdin.isatty():
            raise BadInputError(
                "refused, nothing signed: give the content hash you reviewed with --expect HASH "
                "(printed by 'ota-repo request show')"
            )
        click.confirm(
            f"sign request {req.id} with content hash {content_digest(req.changes)}?", abort=True
        )
        expect = content_digest(req.changes)
    if _is_file(ref):
        req, roles, context = staging.sign_file(
            Path(ref), uri, expect=expect, trusted_root=trusted_root
        )
        states = threshold_states(req, context)
    else:
        repo = ctx.open()
        req, roles = staging.sign_staged(repo, ref, uri, expect=expect, trusted_root=trusted_root)
        states = threshold_states(req, staging.published_context(repo))
    click.echo(f"signed {', '.join(roles)} of {req.id}")
    for line in state_lines(states):
        click.echo(line)


@cli.command("publish")
@click.argument("ref")
@click.option(
    "--allow-single-root-key",
    is_flag=True,
    help="Accept a root threshold below 2 (one stolen key would own the repository).",
)
@pass_ctx
def publish_cmd(ctx: Context, ref: str, allow_single_root_key: bool) -> None:
    """Publish request REF once every threshold is met (then snapshot and timestamp).

    REF is a request ID, or a request FILE signed elsewhere: its signatures are imported first.
    Every staging rule is checked again on the exact metadata published.
    """
    repo = ctx.open()
    if _is_file(ref):
        request_id = staging.import_signatures(repo, Path(ref))[0].id
    else:
        request_id = ref
    req = staging.publish(repo, request_id, allow_single_root_key=allow_single_root_key)
    versions = ", ".join(f"{c.role} v{c.md.signed.version}" for c in req.changes)
    click.echo(f"published {req.id}: {versions}")
