"""`ota-repo serve`: the update server for development (production runs gunicorn, see
docs/operator.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from werkzeug.serving import make_server

from repository.cli._base import Context, cli, fail, pass_ctx
from repository.layout import RepoPaths, load_config


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port (0 picks a free one).")
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), help="TLS certificate.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), help="TLS private key.")
@pass_ctx
def serve(ctx: Context, host: str, port: int, cert: Path | None, key: Path | None) -> None:
    """Serve this repository for development (device authentication off unless the repository's
    config turns it on). Prints the URL, then serves until interrupted."""
    from repository.server import create_app

    if (cert is None) != (key is None):
        fail("--cert and --key go together")
    if not 0 <= port <= 65535:
        fail(f"--port must be between 0 and 65535, not {port}")
    paths = RepoPaths(ctx.repo_dir.resolve())
    section = load_config(paths).extra.get("server", {})
    device_auth = bool(section.get("device_auth", False)) if isinstance(section, dict) else False
    app = create_app({"repo": str(paths.root), "device_auth": device_auth})
    ssl_context = (str(cert), str(key)) if cert and key else None
    try:
        server = make_server(host, port, app, threaded=True, ssl_context=ssl_context)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror}")
    scheme = "https" if ssl_context else "http"
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {paths.root} at {scheme}://{shown}:{server.server_port}/", err=False)
    click.echo(
        f"device authentication {'on' if device_auth else 'off'}; press Ctrl+C to stop", err=True
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
