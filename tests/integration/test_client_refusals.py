"""Refusals: each attack or bad image is refused with its exact error, and the device is
unchanged (active slot bytes, installed version, security counter, trusted metadata)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ota_device import PASSPHRASE, DeviceHandle, Lab, client_env, sha256
from tests.helpers.repo import assert_one_line_error


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OTA_KEY_PASSPHRASE", PASSPHRASE)
    lab = Lab.create(tmp_path)
    with lab.server:
        yield lab


def _device_on_v2(lab: Lab) -> DeviceHandle:
    """A device that committed 2.0.0 (security counter 5) from a factory 1.0.0."""
    v1 = lab.publish("1.0.0", counter=1)
    lab.publish("2.0.0", counter=5)
    dev = lab.device(factory=v1)
    dev.json("update")
    assert dev.json("boot")["committed"]
    return dev


def _refused(dev: DeviceHandle, *args: str, message: str) -> None:
    dev.json("check")  # metadata is current before the snapshot
    before = dev.snapshot()
    proc = dev.run("update", *args)
    assert_one_line_error(proc, message)
    assert proc.stderr.startswith("ota-client: error: ")
    assert dev.snapshot() == before
    assert dev.json("boot")["version"] == before["installed_version"]
    assert dev.snapshot() == before


def test_firmware_for_another_model_is_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    other = lab.publish("3.0.0", hwid="model-y", counter=5)
    _refused(
        dev,
        "--target",
        other,
        message=f"refused {other}: built for model-y, this device is model-x",
    )
    # and the automatic update never picks it
    assert dev.json("check")["update_available"] is False


def test_older_version_is_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    _refused(
        dev,
        "--target",
        "firmware/model-x/fw-1.0.0.bin",
        message="refused firmware/model-x/fw-1.0.0.bin: version 1.0.0 is not newer than "
        "the installed 2.0.0",
    )


def test_version_below_security_counter_is_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    # newer, validly signed, but re-publishes a vulnerable build line (counter 4 < 5)
    old = lab.publish("2.1.0", counter=4)
    _refused(
        dev, "--target", old, message=f"refused {old}: security counter 4 is below the device's 5"
    )
    check = dev.json("check")
    assert check["update_available"] is False
    assert check["skipped"] == [
        {"target": old, "reason": f"refused {old}: security counter 4 is below the device's 5"}
    ]


def test_malformed_firmware_fields_are_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    bad = lab.publish(
        "3.0.0",
        custom={
            "firmware": {"version": "3.0.0-rc1", "hardware_ids": ["model-x"], "security_counter": 9}
        },
    )
    _refused(dev, "--target", bad, message=f"{bad}: malformed version '3.0.0-rc1'")


def test_tampered_image_on_the_server_is_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    v3 = lab.publish("3.0.0", counter=5)
    served = lab.served_file(v3)
    data = bytearray(served.read_bytes())
    data[100] ^= 0xFF
    served.write_bytes(bytes(data))
    _refused(dev, message=f"refused {v3}: slot A does not hold {v3}: Observed hash")
    events = [e for e in dev.events() if e["event"] == "verify"]
    assert events and events[-1]["result"] == "failed"
    assert lab.server.reports()[-1]["result"] == "failed"


def _tampered_v3(lab: Lab) -> str:
    v3 = lab.publish("3.0.0", counter=5)
    served = lab.served_file(v3)
    data = bytearray(served.read_bytes())
    data[100] ^= 0xFF
    served.write_bytes(bytes(data))
    return v3


def test_refusal_report_is_sent_by_the_refused_update_itself(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    v3 = _tampered_v3(lab)
    sent = len(lab.server.reports())
    proc = dev.run("update")
    assert_one_line_error(proc, f"refused {v3}: slot A does not hold {v3}: Observed hash")
    # no other command ran: the failing update sent its own refusal report
    new = lab.server.reports()[sent:]
    assert [(r["event"], r["result"], r["installed_version"], r["slot"]) for r in new] == [
        ("install", "failed", "2.0.0", "A")
    ]
    assert f"slot A does not hold {v3}" in new[0]["reason"]
    assert dev.status()["reports_queued"] == 0


def test_slow_report_server_does_not_hold_a_refused_update(lab: Lab) -> None:
    """The report server accepts the connection and never answers: the refused update still
    ends within the report budget (5 s, far below the 60 s read timeout) with its own one-line
    error, and the report stays queued for the next exchange."""
    dev = _device_on_v2(lab)
    v3 = _tampered_v3(lab)
    genuine = dev.config_path.read_text()
    assert "read_timeout = 10\n" in genuine
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing is ever read or answered
    with silent:
        port = silent.getsockname()[1]
        dev.config_path.write_text(
            genuine.replace(
                f"{lab.server.url}/api/v1/reports", f"https://127.0.0.1:{port}/api/v1/reports"
            ).replace("read_timeout = 10\n", "read_timeout = 60\n")
        )
        started = time.monotonic()
        proc = dev.run("update", timeout=120)
        took = time.monotonic() - started
    assert_one_line_error(proc, f"refused {v3}: slot A does not hold {v3}: Observed hash")
    assert proc.returncode == 1
    assert took < 30, f"the refused update waited {took:.1f} s for the report server"
    dev.config_path.write_text(genuine)
    assert dev.status()["reports_queued"] == 1  # not sent: kept for the next exchange
    assert dev.json("boot")["version"] == "2.0.0"
    assert dev.status()["reports_queued"] == 0
    assert lab.server.reports()[-1]["result"] == "failed"


def test_server_sending_more_bytes_than_the_metadata_is_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    v3 = lab.publish("3.0.0", counter=5)
    lab.server.set_faults({"extra_bytes": {v3.rpartition("/")[2]: 4096}})
    length = len(lab.published[v3])
    _refused(
        dev,
        message=f"refused {v3}: the server sent more than the {length} bytes "
        "the verified metadata lists",
    )


def test_resumed_download_with_tampered_earlier_bytes_is_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    v3 = lab.publish("3.0.0", counter=5, size=2 * 1024 * 1024)
    dev.json("check")
    before = dev.snapshot()
    # the first attempt is cut after 1 MiB (the connection drops): the bytes so far are kept
    lab.server.set_faults({"cut_after": {v3.rpartition("/")[2]: 1024 * 1024}})
    assert_one_line_error(
        dev.run("update"),
        f"download of {v3} failed (it will resume): connection broken mid-transfer",
    )
    assert (dev.data_dir / "download.json").exists()
    # someone alters the partial image while the device waits
    partial = dev.slots["A"]
    data = bytearray(partial.read_bytes())
    data[10] ^= 0xFF
    partial.write_bytes(bytes(data))
    lab.server.set_faults({})
    lab.server.reset_log()
    _refused(dev, message=f"refused {v3}: slot A does not hold {v3}: Observed hash")
    ranged = [r for r in lab.server.requests() if r["range"]]
    assert ranged and ranged[0]["status"] == 206  # it did resume, and still refused
    assert dev.snapshot() == before
    # the tampered partial is dropped: the next attempt starts over and succeeds
    assert dev.json("update")["version"] == "3.0.0"
    assert sha256(dev.slots["A"].read_bytes()) == sha256(lab.published[v3])


def test_tampered_trial_slot_is_never_booted(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    lab.publish("3.0.0", counter=5)
    assert dev.json("update")["slot"] == "A"
    data = bytearray(dev.slots["A"].read_bytes())
    data[-1] ^= 0x01
    dev.slots["A"].write_bytes(bytes(data))
    booted = dev.json("boot")
    assert booted["slot"] == "B" and booted["rolled_back"]
    assert booted["reason"].startswith("trial image does not verify: slot A does not hold")
    assert dev.status()["installed_version"] == "2.0.0"


def test_tampered_committed_slot_falls_back_to_the_verified_one(lab: Lab) -> None:
    dev = _device_on_v2(lab)  # slot B holds 2.0.0 (committed), slot A holds 1.0.0 (counter 1)
    data = bytearray(dev.slots["B"].read_bytes())
    data[0] ^= 0x01
    dev.slots["B"].write_bytes(bytes(data))
    # slot A verifies, but its counter (1) is below the device's (5): refusing is safer
    proc = dev.run("boot")
    assert_one_line_error(proc, "no bootable slot: slot B: slot B does not hold")


def test_loose_data_dir_permissions_are_refused(lab: Lab) -> None:
    dev = _device_on_v2(lab)
    before = dev.snapshot()
    state = dev.data_dir / "state.json"
    state.chmod(0o644)
    proc = dev.run("update")
    assert_one_line_error(
        proc, f"{state} has mode 0644: must be owner-only: run `chmod 0600 {state}`"
    )
    state.chmod(0o600)
    dev.data_dir.chmod(0o755)
    proc = dev.run("boot")
    # the one line names the path, the mode and the command that fixes it
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        f"ota-client: error: {dev.data_dir} has mode 0755: must be owner-only: "
        f"run `chmod 0700 {dev.data_dir}` "
        f"(or `chmod -R go-rwx {dev.data_dir}` for the whole data directory)\n"
    )
    subprocess.run(["chmod", "-R", "go-rwx", str(dev.data_dir)], check=True)  # as it says
    assert dev.snapshot() == before


def test_untrusted_server_certificate_is_refused(lab: Lab, tmp_path: Path) -> None:
    from tests.helpers.certs import make_tls

    dev = _device_on_v2(lab)
    before = dev.snapshot()
    other_ca = make_tls(tmp_path / "other-ca").ca_cert
    text = dev.config_path.read_text().replace(str(lab.tls.ca_cert), str(other_ca))
    dev.config_path.write_text(text)
    proc = dev.run("update")
    assert_one_line_error(proc, "metadata refresh failed", "TLS verification failed")
    assert dev.snapshot() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("device_id = 'x'\n", "missing required setting server"),
        ("not toml = = 1\n", "is not valid TOML"),
    ],
    ids=["missing-setting", "not-toml"],
)
def test_bad_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    import sys

    config = tmp_path / "c.toml"
    config.write_text(text)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ota-client"), "--config", str(config), "status"],
        capture_output=True,
        text=True,
        env=client_env(),
        timeout=30,
    )
    assert_one_line_error(proc, message)
