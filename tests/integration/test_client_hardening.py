"""The device client's configuration and the files it names, driven as the real `ota-client`:
numbers that are not finite or out of range, files that are FIFOs, devices, directories or too
large, URLs that carry credentials, and a report retried after its answer was lost."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ota_device import BIN, PASSPHRASE, DeviceHandle, Lab, client_env
from tests.helpers.repo import assert_one_line_error

TIMEOUT = 30  # a client that blocks on a FIFO is killed here (and the test fails)
MEMORY = 1024 * 1024 * 1024  # a client that reads /dev/zero without end runs out here


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _run(
    dev: DeviceHandle, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real client (`config`: given as $OTA_CLIENT_CONFIG, as a service unit does)."""
    options = [] if config is not None else ["--config", str(dev.config_path)]
    return subprocess.run(
        [str(BIN / "ota-client"), *options, *args],
        env=client_env() if config is None else client_env(OTA_CLIENT_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_limit_memory,
        check=False,
    )


def _edit(dev: DeviceHandle, old: str, new: str) -> None:
    text = dev.config_path.read_text()
    assert old in text, text
    dev.config_path.write_text(text.replace(old, new))


NUMBERS = [
    (
        "[agent]\ninterval = nan\njitter = 0\n",
        "",
        ("run", "--max-iterations", "3"),
        "agent.interval",
    ),
    ("[agent]\njitter = inf\n", "", ("run", "--max-iterations", "1"), "agent.jitter"),
    ("[agent]\nmax_backoff = 1e400\n", "", ("run", "--max-iterations", "1"), "agent.max_backoff"),
    ("", "connect_timeout = nan", ("check",), "server.connect_timeout"),
    ("", "max_download_seconds = nan", ("check",), "server.max_download_seconds"),
    ("", "min_rate_grace_seconds = -inf", ("check",), "server.min_rate_grace_seconds"),
    ("", "min_rate_bytes = 99999999999999999", ("check",), "server.min_rate_bytes"),
]


def test_config_numbers_must_be_finite_and_in_range(lab: Lab) -> None:
    """`interval = nan` made `ota-client run` check without waiting, `jitter = inf` ended in an
    internal OverflowError, a `nan` timeout failed later with a misleading error and
    `max_download_seconds = nan` turned the slow-retrieval guard off: each is refused before
    the client starts, in one line naming the key."""
    v1 = lab.publish("1.0.0", counter=1)
    lab.server.reset_log()
    for i, (extra, server, args, key) in enumerate(NUMBERS):
        dev = lab.device(f"dev-n{i}", extra=extra, server=server)
        proc = _run(dev, *args)
        assert_one_line_error(proc, key, "must be")
    assert lab.server.requests() == []  # not one check reached the server
    dev = lab.device("dev-nan-read", factory=v1)
    _edit(dev, "read_timeout = 10\n", "read_timeout = nan\n")
    assert_one_line_error(_run(dev, "check"), "server.read_timeout must be a finite number")
    _edit(dev, "read_timeout = nan\n", "read_timeout = 10\n")
    assert dev.json("check")["update_available"] is False  # control: the same device works


def _fifo(folder: Path) -> Path:
    path = folder / "fifo"
    os.mkfifo(path, 0o600)
    return path


def _large(folder: Path) -> Path:
    path = folder / "large"
    with open(path, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    path.chmod(0o600)
    return path


SOURCES = {
    "fifo": _fifo,
    "dev-zero": lambda _: Path("/dev/zero"),
    "directory": lambda folder: folder,
    "too-large": _large,
}
# (key, configuration line as provisioned, how the bad path goes in)
FILES = [
    ("trusted_root", 'trusted_root = "root.json"', 'trusted_root = "{}"'),
    ("server.token_file", 'token_file = "token"', 'token_file = "{}"'),
    ("server.ca_bundle", "ca_bundle = ", 'ca_bundle = "{}"'),
]


def test_files_given_by_path_are_bounded_regular_files(lab: Lab) -> None:
    """`trusted_root = "/dev/zero"` hung the client (and a FIFO blocked it forever): the
    configuration, the trusted root, the token, the CA bundle and the device key are read only
    if they are regular files of a bounded size (a FIFO, /dev/zero, a directory or a 64 MiB
    file is refused), in one line naming the path."""
    v1 = lab.publish("1.0.0", counter=1)
    dev = lab.device(factory=v1)
    genuine = dev.config_path.read_text()
    for source, make in SOURCES.items():
        folder = dev.folder / f"bad-{source}"
        folder.mkdir(mode=0o700)
        bad = make(folder)
        for key, line, replacement in FILES:
            start = genuine.index(line)
            end = genuine.index("\n", start)
            dev.config_path.write_text(genuine[:start] + replacement.format(bad) + genuine[end:])
            proc = _run(dev, "check")
            assert_one_line_error(proc, str(bad))
            assert any(w in proc.stderr for w in (key, "token file", "trusted root")), (
                source,
                proc.stderr,
            )
        dev.config_path.write_text(genuine + f'[storage]\ndevice_key_file = "{bad}"\n')
        assert_one_line_error(_run(dev, "check"), "device key file", str(bad))
        assert_one_line_error(_run(dev, "status", config=bad), "configuration", str(bad))
    dev.config_path.write_text(genuine)
    assert dev.json("check")["update_available"] is False  # control


SECRET = "s3cret-Passw0rd"


def test_urls_with_credentials_are_refused_without_echoing_them(lab: Lab) -> None:
    """A `user:secret@` URL echoed the password in the error line and replaced the bearer
    token: every URL of the configuration is refused with userinfo, and the secret is printed
    nowhere (stdout, stderr, the event log) and never sent."""
    v1 = lab.publish("1.0.0", counter=1)
    dev = lab.device(factory=v1)
    genuine = dev.config_path.read_text()
    host = lab.server.url.removeprefix("https://")
    lab.server.reset_log()
    for key in ("metadata_url", "targets_url", "reports_url"):
        _edit(dev, f'{key} = "https://{host}', f'{key} = "https://ota-user:{SECRET}@{host}')
        for args in (("check",), ("update",), ("boot",)):
            proc = _run(dev, *args)
            assert_one_line_error(proc, f"server.{key} must not carry a user name or password")
            assert SECRET not in proc.stdout + proc.stderr
        dev.config_path.write_text(genuine)
    assert SECRET not in (dev.data_dir / "events.log").read_text()
    assert lab.server.requests() == []


def test_a_report_retried_after_a_failed_send_keeps_its_id(lab: Lab) -> None:
    """The report of an install is not accepted (the answer lost: 503); the next command sends
    it again, from the queue, with the same `report_id` it was queued with."""
    v1 = lab.publish("1.0.0", counter=1)
    lab.publish("2.0.0", counter=1)
    dev = lab.device(factory=v1)
    lab.server.set_faults({"reports_status": 503})
    assert dev.json("update")["version"] == "2.0.0"
    queued = [json.loads(p.read_text()) for p in sorted((dev.data_dir / "reports").glob("*.json"))]
    assert queued and all(len(r["report_id"]) == 32 for r in queued), queued
    assert lab.server.reports() == []
    lab.server.set_faults({})
    dev.json("boot")  # sends the queue: the install report, then the commit report
    stored = lab.server.reports()
    assert [r["report_id"] for r in stored[: len(queued)]] == [r["report_id"] for r in queued]
    ids = [r["report_id"] for r in stored]
    assert len(set(ids)) == len(ids) and all(int(i, 16) >= 0 and i == i.lower() for i in ids)
