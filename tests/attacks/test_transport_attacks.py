"""Attacks on the bytes in transit: swapped images, endless data, slow retrieval, and a server
that answers with errors, truncated bodies or the wrong content mid-update.

The attacker here holds no key: it is the network, a mirror or a CDN. Each refusal is the
device's, each recovery shows the same device then updates once the attack stops.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.attacks.conftest import Lab
from tests.attacks.toolkit.record import Attempt
from tests.attacks.toolkit.server import (
    AttackServer,
    endless,
    extra_bytes,
    gzip_bomb,
    header_flood,
    lying_range,
    redirect,
    replace_bytes,
    status,
    trickle,
    trickle_answer,
    truncate,
    wrong_content_type,
)
from tests.attacks.toolkit.simulator import firmware_path
from tests.helpers.certs import make_tls

V2 = firmware_path("model-x", "2.0.0")
IMAGE = "targets/firmware/model-x/*"
FAILED_CHECK = {"event": "check", "result": "failed"}
# The honest metadata of a release is new to the device and rightly trusted even when the
# attacker then breaks the image download.
HONEST_RELEASE_METADATA = (
    "metadata:timestamp.json",
    "metadata:snapshot.json",
    "metadata:firmware-model-x.json",
)
FAILED_DOWNLOAD = {"event": "download", "result": "failed"}
FAILED_VERIFY = {"event": "verify", "result": "failed"}


def test_arbitrary_software_swapped_image(lab: Lab, attack: Callable[..., Attempt]) -> None:
    """The mirror serves other bytes (same length) for a validly signed image."""
    lab.release("2.0.0")
    lab.server.attack(IMAGE, replace_bytes(64, b"EVIL CODE"))
    with attack(lab.device, may_change=HONEST_RELEASE_METADATA) as a:
        out = lab.device.run("update")
        a.refused(out, f"refused {V2}", "slot B does not hold", event=FAILED_VERIFY)
    assert lab.device.status()["slots"]["B"] is None  # nothing recorded for the bad bytes
    assert lab.device.status()["reports_queued"] == 0  # the refused update sent its refusal
    # the operator hears of it at once: the refusal reached the server before recovery
    failed = [r for r in lab.server.reports if (r["event"], r["result"]) == ("install", "failed")]
    assert failed and "slot B does not hold" in failed[0]["reason"], lab.server.reports
    lab.recovers("2.0.0", boot=True)


def test_man_in_the_middle_without_the_pinned_ca(
    lab: Lab, attack: Callable[..., Attempt], tmp_path: Path
) -> None:
    """A network attacker without the device CA's key answers with a certificate from another
    CA (valid, for 127.0.0.1): the device pins its CA bundle and does not send one request."""
    rogue_tls = make_tls(tmp_path / "rogue-tls")
    rogue = AttackServer(lab.repo, rogue_tls.server_cert, rogue_tls.server_key).start()
    config = lab.device.config_path
    genuine = config.read_text()
    try:
        config.write_text(genuine.replace(lab.server.url, rogue.url))
        with attack(lab.device) as a:
            out = lab.device.run("update")
            a.refused(out, "metadata refresh failed", "TLS verification failed", event=FAILED_CHECK)
        assert rogue.paths_requested() == [], "a request went through an untrusted TLS channel"
    finally:
        config.write_text(genuine)
        rogue.stop()
    lab.release("2.0.0")
    lab.recovers("2.0.0")


# -- endless data ------------------------------------------------------------------------------

LIMIT = "exceeding the maximum allowed length of"  # ngclient's UpdaterConfig limits
TOO_LONG = "the server sent more than the"  # the signed target length
ENDLESS: dict[str, tuple[str, tuple[str, ...]]] = {
    "timestamp": ("metadata/timestamp.json", ("metadata refresh failed", f"{LIMIT} 16384")),
    "gzip-bomb-timestamp": (
        "metadata/timestamp.json",
        ("metadata refresh failed", f"{LIMIT} 16384"),
    ),
    "gzip-bomb-image": (IMAGE, (f"refused {V2}", f"{TOO_LONG} 8192 bytes")),
    "root": ("metadata/2.root.json", ("metadata refresh failed", f"{LIMIT} 512000")),
    "delegated-role": ("metadata/*.firmware-model-x.json", ("looking up", f"{LIMIT} 5000000")),
    "snapshot": ("metadata/*.snapshot.json", ("metadata refresh failed", f"{LIMIT} 2000000")),
    "image": (IMAGE, (f"refused {V2}", f"{TOO_LONG} 8192 bytes")),
    "image-with-length": (IMAGE, (f"refused {V2}", f"{TOO_LONG} 8192 bytes")),
}


@pytest.mark.parametrize("where", list(ENDLESS))
def test_endless_data_attack(lab: Lab, attack: Callable[..., Attempt], where: str) -> None:
    """The server never stops sending (or claims and sends more than the signed length).
    Every stream is cut at the length TUF knows for it: the configured maximum for
    timestamp/root, the snapshot's limit, the target's signed length."""
    lab.release("2.0.0")
    pattern, expect = ENDLESS[where]
    action = (
        extra_bytes(10 * 1024 * 1024)
        if where == "image-with-length"
        else gzip_bomb()
        if where.startswith("gzip")
        else endless()
    )
    lab.server.attack(pattern, action)
    may_change: tuple[str, ...] = {
        "snapshot": ("metadata:timestamp.json",),
        "delegated-role": ("metadata:timestamp.json", "metadata:snapshot.json"),
    }.get(where, ())
    if "image" in where:
        # the honest metadata of the 2.0.0 release is new to the device and rightly trusted
        may_change = HONEST_RELEASE_METADATA
    with attack(lab.device, may_change=may_change) as a:
        out = lab.device.run("update")
        event = FAILED_VERIFY if "image" in where else FAILED_CHECK
        a.refused(out, *expect, event=event)
    lab.recovers("2.0.0")


# -- slow retrieval ----------------------------------------------------------------------------

SERVER_BOUND = 6.0
SLOW = {
    "metadata": "metadata/timestamp.json",
    "image": IMAGE,
}


@pytest.mark.parametrize("where", list(SLOW))
def test_slow_retrieval_attack(lab: Lab, attack: Callable[..., Attempt], where: str) -> None:
    """The server trickles one byte just before each socket read timeout, forever. Each read
    succeeds, so only a bound on the whole transfer (time and minimum rate) stops it; the
    device is configured with small bounds (a few seconds) and must cut the transfer itself,
    long before the server's own safety bound (SERVER_BOUND) would end it. Without such a bound
    the device ends with "connection broken mid-transfer" when the server gives up."""
    dev = lab.new_device(
        "dev-slow",
        server={
            "read_timeout": 1.0,
            "max_download_seconds": 2.0,
            "min_rate_bytes": 512,
            "min_rate_grace_seconds": 1.0,
        },
    )
    lab.device = dev
    lab.release("2.0.0", size=64 * 1024)
    lab.server.attack(SLOW[where], trickle(interval=0.8, max_seconds=SERVER_BOUND))
    may_change: tuple[str, ...] = ()
    if where == "image":
        may_change = HONEST_RELEASE_METADATA
    with attack(dev, may_change=may_change) as a:
        out = dev.run("update", timeout=120)
        event = FAILED_DOWNLOAD if where == "image" else FAILED_CHECK
        a.refused(
            out,
            "metadata refresh failed" if where == "metadata" else "download of",
            ("transfer took longer than 2 s", "transfer slower than 512 B/s"),
            event=event,
        )
    assert not any("stopped by its own bound" in n for n in lab.server.notes)
    lab.recovers("2.0.0")


@pytest.mark.parametrize("how", ["body", "status-line"])
def test_slow_retrieval_on_reports_does_not_hold_the_boot(
    lab: Lab, attack: Callable[..., Attempt], how: str
) -> None:
    """After an update, the server answers the device's status report one byte just before
    each read timeout (in the body, or from the status line on). Reports are best effort: the
    boot decides and returns, and the device hangs up long before the server's own bound; a
    report whose status never arrived stays queued."""
    dev = lab.new_device("dev-slow-report", server={"read_timeout": 1.0})
    lab.device = dev
    lab.release("2.0.0")
    assert dev.ok("update")["slot"] == "B"
    if how == "body":
        lab.server.attack("api/v1/reports", trickle(interval=0.8, max_seconds=SERVER_BOUND))
    else:
        lab.server.attack("api/v1/reports", trickle_answer(interval=0.8, max_seconds=SERVER_BOUND))
    with attack(
        dev, may_change=("active_slot", "active_bytes", "installed_version", "trial_slot")
    ) as a:
        out = dev.run("boot", timeout=120)
        held = any("stopped by its own bound" in n for n in lab.server.notes)
        assert not held, "the boot waited for the server to give up on its report"
        a.ignored(
            out, check=lambda r: r["committed"] is True, event={"event": "commit", "result": "ok"}
        )
    if how == "status-line":  # not accepted: it stays queued for the next flush
        assert dev.status()["reports_queued"] >= 1


# -- a failing or lying server mid-update ------------------------------------------------------

FAULTS: dict[str, tuple[str, Any, tuple[str, ...], dict[str, str]]] = {
    "redirect-timestamp-elsewhere": (
        "metadata/timestamp.json",
        redirect("https://attacker.invalid/timestamp.json"),
        ("metadata refresh failed", "HTTP 302"),
        FAILED_CHECK,
    ),
    "redirect-image-to-other-file": (
        IMAGE,
        redirect("/metadata/1.root.json"),
        (f"download of {V2} failed", "HTTP 302"),
        FAILED_DOWNLOAD,
    ),
    "header-flood-on-timestamp": (
        "metadata/timestamp.json",
        header_flood(),
        ("metadata refresh failed", "connection failed"),
        FAILED_CHECK,
    ),
    "500-on-snapshot": (
        "metadata/*.snapshot.json",
        status(500),
        ("metadata refresh failed", "HTTP 500"),
        FAILED_CHECK,
    ),
    "500-on-image": (IMAGE, status(500), (f"download of {V2} failed", "HTTP 500"), FAILED_DOWNLOAD),
    "503-on-timestamp": (
        "metadata/timestamp.json",
        status(503),
        ("metadata refresh failed", "HTTP 503"),
        FAILED_CHECK,
    ),
    "truncated-snapshot": (
        "metadata/*.snapshot.json",
        truncate(0.5),
        ("metadata refresh failed", "connection broken mid-transfer"),
        FAILED_CHECK,
    ),
    "truncated-image": (
        IMAGE,
        truncate(0.5),
        (f"download of {V2} failed (it will resume)", "connection broken mid-transfer"),
        FAILED_DOWNLOAD,
    ),
    "html-instead-of-snapshot": (
        "metadata/*.snapshot.json",
        wrong_content_type(),
        ("metadata refresh failed", "DeserializationError"),
        FAILED_CHECK,
    ),
    "html-instead-of-image": (
        IMAGE,
        wrong_content_type(b"<html>" + b" " * 1100000 + b"</html>"),
        (f"refused {V2}", "more than the"),
        FAILED_VERIFY,
    ),
    "json-content-type-on-image": (
        IMAGE,
        replace_bytes(0, b"{}"),
        (f"refused {V2}", "does not hold"),
        FAILED_VERIFY,
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_server_faults_mid_update(lab: Lab, attack: Callable[..., Attempt], fault: str) -> None:
    """The server fails or lies halfway through an update (after the device has started it)."""
    lab.release("2.0.0", size=1024 * 1024)  # several read chunks: a cut leaves bytes to resume
    pattern, action, fragments, event = FAULTS[fault]
    lab.server.attack(pattern, action)
    may_change: tuple[str, ...] = ()
    if "image" in fault:
        may_change = HONEST_RELEASE_METADATA
    elif "snapshot" in fault:
        may_change = ("metadata:timestamp.json",)  # the honest new timestamp came through
    with attack(lab.device, may_change=may_change) as a:
        out = lab.device.run("update")
        a.refused(out, *fragments, event=event)
    # A truncated image resumes where it stopped; a resumed download onto bad bytes is
    # refused once and then starts over.
    lab.recovers("2.0.0", attempts=2)
    if fault == "truncated-image":
        assert any(
            r and r.startswith("bytes=")
            for _, p, r in lab.server.requests
            if p.startswith("targets/")
        ), "the interrupted download did not resume"


def test_resume_answered_with_a_lying_range(lab: Lab, attack: Callable[..., Attempt]) -> None:
    """A download is cut; when the device resumes, the server answers 206 for a range that
    starts 4 KiB before the one asked for. The device refuses the answer instead of writing
    those bytes at the wrong place, and a later attempt completes."""
    lab.release("2.0.0", size=1024 * 1024)
    lab.server.attack(IMAGE, truncate(0.6), times=1)
    cut = lab.device.run("update")
    assert cut.returncode == 1 and "it will resume" in cut.error, cut
    lab.server.attack(IMAGE, lying_range())
    with attack(lab.device) as a:
        out = lab.device.run("update")
        a.refused(
            out, f"download of {V2} failed", "server sent the wrong range", event=FAILED_DOWNLOAD
        )
    lab.recovers("2.0.0")
