"""Signing requests: list, show, sign (here or on another machine), export, import, publish."""

from __future__ import annotations

import json
from pathlib import Path

import click

from repository import staging
from repository.cli._base import Context, cli, emit, pass_ctx
from repository.cli._reqfmt import (
    echo_request,
    previous_embedded,
    previous_published,
    request_json,
    state_lines,
)
from repository.signing import threshold_states


def _is_file(ref: str) -> bool:
    return "/" in ref or ref.endswith(".json") or Path(ref).is_file()


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
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def request_show(ctx: Context, ref: str, as_json: bool) -> None:
    """Show what a request (ID here, or an exported FILE) changes and who has signed."""
    if _is_file(ref):
        req = staging.load_file(Path(ref))
        context, stale, previous = req.context, "", previous_embedded(req)
    else:
        repo = ctx.open()
        req = staging.load(repo, ref)
        context, stale = staging.context_for(repo, req), staging.stale_reason(repo, req) or ""
        previous = previous_embedded(req) if stale else previous_published(repo, req)
    states = threshold_states(req, context)
    if as_json:
        click.echo(json.dumps(request_json(req, states, stale), indent=2, sort_keys=True))
    else:
        echo_request(req, states, stale, previous)


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
@pass_ctx
def sign_cmd(ctx: Context, ref: str, uri: str) -> None:
    """Add your signature to request REF: a request ID here, or an exported request FILE.

    Signing a FILE needs no repository: carry it back and run 'ota-repo request import'.
    """
    if _is_file(ref):
        req, roles = staging.sign_file(Path(ref), uri)
        states = threshold_states(req, req.context)
    else:
        repo = ctx.open()
        req, roles = staging.sign_staged(repo, ref, uri)
        states = threshold_states(req, staging.published_context(repo))
    click.echo(f"signed {', '.join(roles)} of {req.id}")
    for line in state_lines(states):
        click.echo(line)


@cli.command("publish")
@click.argument("ref")
@pass_ctx
def publish_cmd(ctx: Context, ref: str) -> None:
    """Publish request REF once every threshold is met (then snapshot and timestamp).

    REF is a request ID, or a request FILE signed elsewhere: its signatures are imported first.
    """
    repo = ctx.open()
    if _is_file(ref):
        request_id = staging.import_signatures(repo, Path(ref))[0].id
    else:
        request_id = ref
    req = staging.publish(repo, request_id)
    versions = ", ".join(f"{c.role} v{c.md.signed.version}" for c in req.changes)
    click.echo(f"published {req.id}: {versions}")
