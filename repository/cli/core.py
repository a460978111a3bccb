"""Creating, publishing, refreshing, inspecting and verifying a repository."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from repository import audit
from repository.cli._base import Context, cli, emit, fail, pass_ctx
from repository.cli._options import expiry_days, production_keys
from repository.create import init_dev, init_production
from repository.hashbins import ONLINE_BINS_NEW
from repository.layout import RepoPaths
from repository.server.requestlog import (
    check_anchor,
    request_log_head,
    request_log_path,
    verify_request_log,
)
from repository.status import expiry_warnings, repository_status, status_json, warning_days
from repository.verify import verify_repository

DEV_WARNING = (
    "WARNING: --dev keeps every private key, root's included, in this folder. "
    "For demos and tests only, never for a fleet."
)


@cli.command()
@click.option("--dev", is_flag=True, help="Generate every key here (demos and tests only).")
@click.option(
    "--root-key",
    "root_keys",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Public key file of a root key holder (repeat).",
)
@click.option("--root-threshold", type=int, default=2, show_default=True)
@click.option(
    "--targets-key",
    "targets_keys",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Public key file of a targets key holder (repeat).",
)
@click.option("--targets-threshold", type=int, default=1, show_default=True)
@click.option("--snapshot-key", type=click.Path(path_type=Path), help="Online snapshot public key.")
@click.option("--snapshot-uri", help="Signer URI of the online snapshot key (encfile:, hsm:, ...).")
@click.option(
    "--timestamp-key", type=click.Path(path_type=Path), help="Online timestamp public key."
)
@click.option("--timestamp-uri", help="Signer URI of the online timestamp key.")
@click.option(
    "--sign-with",
    "sign_with",
    multiple=True,
    help="Signer URI of an offline root/targets key present now (repeat).",
)
@click.option(
    "--allow-single-root-key",
    is_flag=True,
    help="Accept a root threshold of 1 (one stolen key then owns the fleet).",
)
@click.option(
    "--hash-bins",
    "hash_bins",
    type=int,
    hidden=True,
    help="Refused: bins delegated by targets would be signed by an online key.",
)
@click.option(
    "--expiry",
    "expiry",
    multiple=True,
    metavar="ROLE=DAYS",
    help="Expiry period of a role (defaults: root 365, targets 90, snapshot 7, timestamp 1).",
)
@pass_ctx
def init(
    ctx: Context,
    dev: bool,
    root_keys: tuple[Path, ...],
    root_threshold: int,
    targets_keys: tuple[Path, ...],
    targets_threshold: int,
    snapshot_key: Path | None,
    snapshot_uri: str | None,
    timestamp_key: Path | None,
    timestamp_uri: str | None,
    sign_with: tuple[str, ...],
    allow_single_root_key: bool,
    hash_bins: int | None,
    expiry: tuple[str, ...],
) -> None:
    """Create a repository: root, targets, snapshot and timestamp version 1."""
    periods = expiry_days(expiry)
    if hash_bins is not None:
        fail(ONLINE_BINS_NEW)  # before anything is created
    if dev:
        if root_keys or targets_keys or snapshot_key or timestamp_key or sign_with:
            fail("--dev generates its own keys: do not pass key options with it")
        click.echo(DEV_WARNING, err=True)
        repo = init_dev(ctx.repo_dir, expiry_days=periods)
    else:
        repo = init_production(
            ctx.repo_dir,
            **production_keys(
                root_keys,
                root_threshold,
                targets_keys,
                targets_threshold,
                {
                    "snapshot": (snapshot_key, snapshot_uri),
                    "timestamp": (timestamp_key, timestamp_uri),
                },
            ),
            sign_with=list(sign_with),
            allow_single_root_key=allow_single_root_key,
            expiry_days=periods,
        )
    click.echo(f"created repository in {repo.paths.root}")
    click.echo(f"devices trust {repo.paths.metadata / '1.root.json'}")


@cli.command("add-target")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--path", "target_path", required=True, help="Target path, e.g. firmware/model-x/fw-1.2.0.bin"
)
@click.option("--custom", "custom_json", help="JSON object for the target's custom field.")
@click.option("--role", default="targets", show_default=True, help="Role that lists the target.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def add_target(
    ctx: Context, file: Path, target_path: str, custom_json: str | None, role: str, as_json: bool
) -> None:
    """Publish FILE as a target (new targets, snapshot and timestamp versions)."""
    custom: dict[str, Any] | None = None
    if custom_json is not None:
        try:
            custom = json.loads(custom_json)
        except ValueError:
            fail("--custom is not valid JSON")
        if not isinstance(custom, dict):
            fail("--custom must be a JSON object")
    repo = ctx.open()
    (tf,) = repo.add_targets([(file, target_path, custom)], role=role)
    emit(
        {"path": tf.path, "length": tf.length, "hashes": tf.hashes, "role": role},
        as_json,
        f"published {tf.path} ({tf.length} bytes, sha256 {tf.hashes['sha256']})",
    )


@cli.command("remove-target")
@click.argument("target_path")
@click.option("--role", default="targets", show_default=True)
@pass_ctx
def remove_target(ctx: Context, target_path: str, role: str) -> None:
    """Stop listing TARGET_PATH (its file stays for clients of older snapshots)."""
    ctx.open().remove_targets([target_path], role=role)
    click.echo(f"removed {target_path}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def refresh(ctx: Context, as_json: bool) -> None:
    """Re-sign snapshot and timestamp if they expire soon (safe to run every few minutes)."""
    done = ctx.open().refresh()
    emit(
        {"resigned": done},
        as_json,
        f"re-signed {', '.join(done)}" if done else "fresh: nothing to do",
    )


def _role_numbers(values: tuple[str, ...], option: str) -> dict[str, float]:
    result = {}
    for item in values:
        role, _, number = item.partition("=")
        try:
            result[role] = float(number)
        except ValueError:
            fail(f"{option} takes ROLE=NUMBER: {item!r}")
    return result


@cli.command()
@click.option(
    "--warn",
    "warn",
    multiple=True,
    metavar="ROLE=DAYS",
    help="Warn when ROLE expires within DAYS (defaults: root 60, targets and delegated 14, "
    "snapshot 1, timestamp 0.25; the config's expiry_warning_days).",
)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(ctx: Context, warn: tuple[str, ...], as_json: bool) -> None:
    """Roles, versions, keys, thresholds, signatures and expiry; a warning for every role that
    expires within its lead time."""
    repo = ctx.open()
    rows = repository_status(repo)
    now = datetime.now(UTC)
    warnings = expiry_warnings(rows, now, warning_days(repo, _role_numbers(warn, "--warn")))
    for line in warnings:
        click.echo(f"WARNING: {line}", err=True)
    lines = []
    for r in rows:
        state = "ok" if r.threshold_met else "UNDER THRESHOLD"
        lines.append(
            f"{r.role:<20} v{r.version:<5} expires {r.expires}  "
            f"signatures {len(r.signed_by)}/{r.threshold} of {len(r.keyids)} keys ({state})"
            + (f"  paths {', '.join(r.paths)}" if r.paths else "")
            + (f"  targets {r.targets}" if r.targets is not None else "")
        )
    emit({**status_json(rows, now), "warnings": warnings}, as_json, "\n".join(lines))


@cli.command()
@click.option(
    "--days",
    type=float,
    default=0,
    show_default=True,
    help="Fail if any role expires within this many days.",
)
@click.option(
    "--root",
    "trusted_root",
    type=click.Path(path_type=Path),
    help="Trusted root to start from (default: metadata/1.root.json).",
)
@click.option(
    "--budget",
    "budget",
    multiple=True,
    metavar="KIND=BYTES",
    help="Largest metadata file a device accepts, per kind (root, timestamp, snapshot, "
    "targets); default: the config's metadata_budget, else ngclient's limits.",
)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def verify(
    ctx: Context, days: float, trusted_root: Path | None, budget: tuple[str, ...], as_json: bool
) -> None:
    """Load the published repository with a real TUF client and download every target; every
    metadata file over its size budget is reported."""
    sizes = {kind: int(n) for kind, n in _role_numbers(budget, "--budget").items()}
    report = verify_repository(ctx.repo_dir, trusted_root=trusted_root, days=days, budget=sizes)
    data = {
        "targets_checked": report.targets_checked,
        "roles": [
            {"role": r.role, "version": r.version, "expires": r.expires.isoformat()}
            for r in report.roles
        ],
    }
    emit(
        data,
        as_json,
        f"ok: {len(report.roles)} roles and {report.targets_checked} targets verified",
    )


@cli.group("audit")
def audit_group() -> None:
    """The hash-chained audit log of publishes."""


@audit_group.command("verify")
@click.option(
    "--request-log-anchor",
    "anchor",
    metavar="SEQ:SHA256",
    help="A request log head printed earlier by 'ota-repo audit head' and kept off the server.",
)
@pass_ctx
def audit_verify(ctx: Context, anchor: str | None) -> None:
    """Check that no line of the publish log or the server's request log was edited, removed or
    reordered (and, with --request-log-anchor, that the request log still holds that line)."""
    repo = ctx.open()
    report = audit.verify(RepoPaths(repo.paths.root).audit, repo.timestamp().version)
    if not report.ok:
        fail("audit log tampered: " + "; ".join(report.problems))
    log = request_log_path(repo.paths.private)
    counted = ""
    if log.exists():
        lines, problems = verify_request_log(log)
        if anchor is not None:
            seq, _, digest = anchor.partition(":")
            if not seq.isdigit() or len(digest) != 64:
                fail("--request-log-anchor takes SEQ:SHA256 as 'ota-repo audit head' prints it")
            problem = check_anchor(log, int(seq), digest)
            problems += [problem] if problem else []
        if problems:
            fail("request log tampered: " + "; ".join(problems))
        counted = f", {lines} request log lines"
    elif anchor is not None:
        fail(f"request log {log} is missing but an anchor was given")
    chains = "chains" if counted else "chain"
    click.echo(f"ok: {report.entries} audit lines{counted}, {chains} intact")


@audit_group.command("head")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def audit_head(ctx: Context, as_json: bool) -> None:
    """Print the request log's last line as SEQ:SHA256: keep it off the server (a ticket, a
    log host) and pass it to 'audit verify --request-log-anchor' later."""
    log = request_log_path(ctx.open().paths.private)
    head = request_log_head(log) if log.exists() else None
    value = f"{head[0]}:{head[1]}" if head else None
    emit({"request_log": value}, as_json, value or "the request log is empty")


@audit_group.command("show")
@pass_ctx
def audit_show(ctx: Context) -> None:
    """Print the audit log (JSON lines)."""
    for entry in audit.read_entries(ctx.open().paths.audit):
        click.echo(json.dumps(entry, sort_keys=True))
