"""`ota-client`: the device's command line (check, update, boot, run, status, provision, log).

Each command is a few lines calling the library. Errors become one line on stderr and exit
code 1 (a traceback only with --debug).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from client.config import load_config
from client.device import Device
from client.errors import UpdateError

DEFAULT_CONFIG = "/etc/ota-client.toml"
T = TypeVar("T")


class Ctx:
    def __init__(self) -> None:
        self.config_path = Path(os.environ.get("OTA_CLIENT_CONFIG", DEFAULT_CONFIG))
        self.json = False
        self.debug = False

    def device(self, stop: threading.Event | None = None) -> Device:
        return Device(load_config(self.config_path), stop=stop)

    def emit(self, data: dict[str, Any], text: str) -> None:
        click.echo(json.dumps(data, sort_keys=True) if self.json else text)

    def guard(self, work: Callable[[], T]) -> T:
        """Run `work`; map every error to one line on stderr and exit 1."""
        try:
            return work()
        except UpdateError as e:
            self._fail(str(e))
        except KeyboardInterrupt:
            self._fail("interrupted")
        except Exception as e:  # noqa: BLE001 - the CLI edge: one line, never a traceback
            self._fail(f"internal error: {type(e).__name__}: {e}")
        raise AssertionError("unreachable")

    def _fail(self, message: str) -> None:
        if self.debug:
            traceback.print_exc()
        click.echo(
            f"ota-client: error: {message.splitlines()[0] if message else 'failed'}", err=True
        )
        sys.exit(1)


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    """--config, --json and --debug work before or after the sub-command."""

    def set_config(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(Ctx).config_path = Path(value)

    def set_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
        def cb(ctx: click.Context, _: click.Parameter, value: bool) -> None:
            if value:
                setattr(ctx.ensure_object(Ctx), name, True)

        return cb

    f = click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=set_config,
        is_eager=True,
        help=f"Configuration file (default $OTA_CLIENT_CONFIG or {DEFAULT_CONFIG}).",
    )(f)
    f = click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=set_flag("json"),
        help="Machine-readable output.",
    )(f)
    f = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=set_flag("debug"),
        help="Show tracebacks.",
    )(f)
    return f


@click.group()
@_common
def main() -> None:
    """Secure over-the-air firmware updates for this device (TUF-verified, A/B slots)."""
    os.umask(0o077)
    logging.basicConfig(level=logging.WARNING, format="ota-client: %(levelname)s: %(message)s")


def _progress(ctx: Ctx, wanted: bool | None) -> Callable[[int, int], None] | None:
    """A progress bar on a terminal; with --progress elsewhere (logs, serial consoles), one
    line per 10%."""
    tty = sys.stderr.isatty()
    if ctx.json or not (tty if wanted is None else wanted):
        return None
    bar: Any = None
    shown = 0

    def on_tty(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=total, label="downloading", file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown)
        shown = done
        if done >= total:
            bar.__exit__(None, None, None)

    def as_lines(done: int, total: int) -> None:
        nonlocal shown
        tenth = done * 10 // max(total, 1)
        if tenth > shown or done == 0:
            shown = tenth
            click.echo(f"downloading: {tenth * 10}% ({done}/{total} bytes)", err=True)

    return on_tty if tty else as_lines


@main.command()
@_common
@pass_ctx
def check(ctx: Ctx) -> None:
    """Refresh verified metadata and say whether an update is available."""
    from client.update import check as do_check

    result = ctx.guard(lambda: do_check(ctx.device()))
    c = result.candidate
    text = (
        f"update available: {c.version_text} ({c.path}); installed {result.installed.version_text}"
        if c
        else f"no update: {result.installed.version_text} is the newest acceptable firmware"
    )
    ctx.emit(result.to_json(), text)


@main.command()
@click.option("--target", "target", default=None, help="Install this target path (policy applies).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@_common
@pass_ctx
def update(ctx: Ctx, target: str | None, progress: bool | None) -> None:
    """Download, verify and install an update into the inactive slot."""
    from client.update import update as do_update

    result = ctx.guard(
        lambda: do_update(ctx.device(), target_path=target, progress=_progress(ctx, progress))
    )
    text = (
        f"installed {result.version} into slot {result.slot}; reboot to try it"
        if result.installed
        else f"no update: {result.from_version} is the newest acceptable firmware"
    )
    ctx.emit(result.to_json(), text)


@main.command()
@_common
@pass_ctx
def boot(ctx: Ctx) -> None:
    """Run at every start: try a pending update (health check, commit or roll back)."""
    from client.boot import boot as do_boot

    device = ctx.guard(ctx.device)
    r = ctx.guard(lambda: do_boot(device))
    how = (
        "committed after a passing health check"
        if r.committed
        else f"rolled back: {r.reason}"
        if r.rolled_back
        else "committed"
    )
    then = "; rebooting into it" if r.reboot_required else ""
    ctx.emit(r.to_json(), f"booted slot {r.slot}: {r.version} ({how}){then}")
    if r.reboot_required:
        device.reboot()


@main.command()
@_common
@pass_ctx
def status(ctx: Ctx) -> None:
    """Show the installed firmware, slots and pending trial."""
    s = ctx.guard(lambda: ctx.device().status())
    lines = [
        f"device {s.device_id} ({s.hardware_id})",
        f"installed: {s.installed.version_text if s.installed else 'none'} in slot {s.active_slot}",
        f"security counter: {s.security_counter}",
        f"trial: slot {s.trial_slot}, {s.trial_tries} tries left"
        if s.trial_slot
        else "trial: none",
        f"reports queued: {s.reports_queued}",
    ]
    ctx.emit(s.to_json(), "\n".join(lines))


@main.command()
@click.option("--slot", required=True, type=click.Choice(["A", "B"]))
@click.option("--target", "target", required=True, help="Target path of the factory image.")
@_common
@pass_ctx
def provision(ctx: Ctx, slot: str, target: str) -> None:
    """Record the factory image in SLOT (verified against the repository)."""
    from client.provision import provision as do_provision

    record = ctx.guard(lambda: do_provision(ctx.device(), slot, target))
    ctx.emit(
        {"slot": slot, **record.to_dict()},
        f"provisioned: slot {slot} holds {record.version_text} ({record.target.path})",
    )


@main.command()
@click.option(
    "--max-iterations",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many checks (default: run until SIGTERM).",
)
@_common
@pass_ctx
def run(ctx: Ctx, max_iterations: int | None) -> None:
    """Check and update periodically (interval + jitter, backoff) until SIGTERM."""
    from client.agent import run_agent

    logging.getLogger().setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    device = ctx.guard(lambda: ctx.device(stop))
    checks = ctx.guard(lambda: run_agent(device, stop=stop, max_iterations=max_iterations))
    ctx.emit({"checks": checks, "stopped": stop.is_set()}, f"stopped after {checks} check(s)")


@main.group()
def log() -> None:
    """The hash-chained event log."""


@log.command("verify")
@_common
@pass_ctx
def log_verify(ctx: Ctx) -> None:
    """Check the event log's hash chain."""
    result = ctx.guard(lambda: ctx.device().events.verify())
    note = " (last record torn by a power loss)" if result.torn_tail else ""
    ctx.emit(
        {"ok": True, "records": result.records, "head": result.head, "torn_tail": result.torn_tail},
        f"event log OK: {result.records} records, head {result.head}{note}",
    )


if __name__ == "__main__":
    main()
