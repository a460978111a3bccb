"""`ota-repo device ...` and `ota-repo upload-token ...`: who may talk to the update server."""

from __future__ import annotations

import click

from repository import devices
from repository.cli._base import Context, cli, emit, pass_ctx
from repository.layout import RepoPaths


def _paths(ctx: Context) -> RepoPaths:
    return RepoPaths(ctx.repo_dir.resolve())


@cli.group("device")
def device_group() -> None:
    """Register devices for the update server (each gets a bearer token)."""


@device_group.command("add")
@click.argument("device_id")
@click.option("--hwid", required=True, help="Hardware model, e.g. model-x.")
@pass_ctx
def device_add(ctx: Context, device_id: str, hwid: str) -> None:
    """Register DEVICE_ID and print its token (shown only this once; store it on the device)."""
    token = devices.add_device(_paths(ctx), device_id, hwid)
    click.echo(f"registered {device_id} ({hwid}); its token, shown only now:", err=True)
    click.echo(token)


@device_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def device_list(ctx: Context, as_json: bool) -> None:
    """Registered devices and their hardware models (never tokens)."""
    reg = devices.load_registry(_paths(ctx))
    rows = [
        {"device_id": d.device_id, "hwid": d.hwid, "added": d.added}
        for d in sorted(reg.devices.values(), key=lambda d: d.device_id)
    ]
    text = "\n".join(f"{r['device_id']:<32} {r['hwid']:<20} {r['added']}" for r in rows)
    emit(rows, as_json, text or "no devices registered")


@device_group.command("remove")
@click.argument("device_id")
@pass_ctx
def device_remove(ctx: Context, device_id: str) -> None:
    """Remove DEVICE_ID: its token stops working within a second."""
    devices.remove_device(_paths(ctx), device_id)
    click.echo(f"removed {device_id}")


@cli.group("upload-token")
def upload_token_group() -> None:
    """Tokens publishers upload with (the server requires one unless its config sets
    `upload_tokens: false`)."""


@upload_token_group.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="Role it may upload (repeat).")
@pass_ctx
def upload_token_add(ctx: Context, name: str, roles: tuple[str, ...]) -> None:
    """Make an upload token for publisher NAME and print it (shown only this once)."""
    token = devices.add_uploader(_paths(ctx), name, list(roles))
    click.echo(
        f"upload token for {name} ({', '.join(sorted(set(roles)))}), shown only now:", err=True
    )
    click.echo(token)


@upload_token_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def upload_token_list(ctx: Context, as_json: bool) -> None:
    """Publishers with upload tokens and their roles."""
    reg = devices.load_registry(_paths(ctx))
    rows = [
        {"name": u.name, "roles": list(u.roles), "added": u.added}
        for u in sorted(reg.uploaders.values(), key=lambda u: u.name)
    ]
    text = "\n".join(f"{r['name']:<32} {','.join(r['roles']):<30} {r['added']}" for r in rows)
    emit(rows, as_json, text or "no upload tokens")


@upload_token_group.command("remove")
@click.argument("name")
@pass_ctx
def upload_token_remove(ctx: Context, name: str) -> None:
    """Revoke the upload token of publisher NAME."""
    devices.remove_uploader(_paths(ctx), name)
    click.echo(f"revoked the upload token of {name}")
