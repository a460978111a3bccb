#!/usr/bin/env python3
"""Device client: the no-update check and a 64 MiB download+verify+install, as ratios against
floors measured in the same run from the same HTTPS server.

1. No-update check (`ota-client check` when nothing changed): HTTP requests and bytes the server
   counted, and the time of `client.update.check` in-process as a ratio of one plain GET of
   timestamp.json (new TLS connection each, like the check).
2. Update: `client.update.update` in-process (TUF refresh, listing, Range-capable download
   streamed into slot B, fsync, read back from the medium, python-tuf verification, state) as a
   ratio of a raw download + SHA-256 of the same file (hashed while it streams, nothing written).
3. Peak RSS of an `ota-client update` process doing the same update (os.wait4).

The images come from ../shared/bench/firmware_scenarios.py (scenario `scattered`).

Usage: bench/bench_client.py [--size-mib 64] [--rounds 7]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.boot import boot  # noqa: E402
from client.config import load_config  # noqa: E402
from client.device import Device  # noqa: E402
from client.update import check, update  # noqa: E402
from tests.helpers.ota_device import BIN, PASSPHRASE, TOKEN, DeviceHandle, Lab, client_env  # noqa: E402

SCENARIOS = ROOT.parent / "shared" / "bench" / "firmware_scenarios.py"


def _images(tmp: Path, size_mib: float) -> tuple[bytes, bytes]:
    old, new = tmp / "old.bin", tmp / "new.bin"
    subprocess.run(
        [
            sys.executable,
            str(SCENARIOS),
            "--scenario",
            "scattered",
            "--size-mib",
            str(size_mib),
            str(old),
            str(new),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return old.read_bytes(), new.read_bytes()


def _session(lab: Lab) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(lab.tls.ca_cert)
    s.headers["Authorization"] = f"Bearer {TOKEN}"
    s.headers["Accept-Encoding"] = "identity"
    return s


def raw_download(lab: Lab, url: str, cpu: list[float] | None = None) -> float:
    started, cpu_started = time.perf_counter(), time.process_time()
    with _session(lab) as s, s.get(url, stream=True, timeout=60) as r:
        r.raise_for_status()
        digest = hashlib.sha256()
        for chunk in r.iter_content(256 * 1024):
            digest.update(chunk)
    digest.hexdigest()
    if cpu is not None:
        cpu.append(time.process_time() - cpu_started)
    return time.perf_counter() - started


def raw_install(lab: Lab, url: str, slot: Path) -> float:
    """The least any installer does: the raw download + SHA-256, each chunk also written into
    the slot, then fdatasync. No TUF, no state: what the 64 MiB goal cannot go below here."""
    started = time.perf_counter()
    with _session(lab) as s, s.get(url, stream=True, timeout=60) as r, open(slot, "r+b") as out:
        r.raise_for_status()
        digest = hashlib.sha256()
        for chunk in r.iter_content(256 * 1024):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fdatasync(out.fileno())
    digest.hexdigest()
    return time.perf_counter() - started


def plain_ngclient(
    lab: Lab, dev: DeviceHandle, target_path: str, work: Path, cpu: list[float]
) -> float:
    """For context: python-tuf's own `download_target` (temp file, second hashing pass), then
    a copy into the slot and fsync, as a client without streaming would install."""
    from tuf.ngclient import Updater

    from client.fetcher import DeviceFetcher

    shutil.rmtree(work, ignore_errors=True)
    (work / "metadata").mkdir(parents=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    fetcher = DeviceFetcher(ca_bundle=lab.tls.ca_cert, token=TOKEN)
    updater = Updater(
        str(work / "metadata"),
        f"{lab.server.url}/metadata/",
        str(work),
        f"{lab.server.url}/targets/",
        fetcher,
        bootstrap=(lab.repo_dir / "metadata" / "1.root.json").read_bytes(),
    )
    updater.refresh()
    info = updater.get_targetinfo(target_path)
    assert info is not None
    downloaded = updater.download_target(info, str(work / "image"))
    with open(downloaded, "rb") as src, open(dev.slots["B"], "r+b") as slot:
        shutil.copyfileobj(src, slot, 1024 * 1024)
        slot.truncate(info.length)
        os.fsync(slot.fileno())
    fetcher.close()
    cpu.append(time.process_time() - cpu_started)
    return time.perf_counter() - started


def plain_get(lab: Lab, url: str) -> float:
    started = time.perf_counter()
    with _session(lab) as s:
        s.get(url, timeout=30).raise_for_status()
    return time.perf_counter() - started


def _restore(saved: Path, data_dir: Path) -> None:
    shutil.rmtree(data_dir)
    shutil.copytree(saved, data_dir, symlinks=True)


# A small launcher measures the client: a child's peak RSS counts the memory of the process it
# was forked from until exec, and this benchmark holds the images in memory.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_mib(dev: DeviceHandle) -> float:
    """Peak RSS of an `ota-client update` process."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _LAUNCHER,
            str(BIN / "ota-client"),
            "--config",
            str(dev.config_path),
            "update",
        ],
        env=client_env(),
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout.split()
    if out[-2] != "0":
        raise SystemExit(f"ota-client update failed: {proc.stderr}")
    return int(out[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=float, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    os.environ["OTA_KEY_PASSPHRASE"] = PASSPHRASE
    os.umask(0o077)
    with tempfile.TemporaryDirectory(prefix="ota-bench-client-") as tmp_name:
        tmp = Path(tmp_name)
        old, new = _images(tmp, args.size_mib)
        lab = Lab.create(tmp / "lab")
        v1 = lab.publish("1.0.0", data=old)
        v2 = lab.publish("2.0.0", data=new)
        with lab.server:
            dev = lab.device(factory=v1)
            # slot B is a partition on a device: allocated once, rewritten in place
            with open(dev.slots["B"], "wb") as f:
                f.write(bytes(len(new) + 1024 * 1024))
                os.fsync(f.fileno())
            saved = tmp / "saved-data"
            shutil.copytree(dev.data_dir, saved, symlinks=True)
            rss = peak_rss_mib(dev)
            _restore(saved, dev.data_dir)

            config = load_config(dev.config_path)
            target_url = (
                f"{lab.server.url}/targets/{v2.rpartition('/')[0]}/"
                f"{hashlib.sha256(new).hexdigest()}.{v2.rpartition('/')[2]}"
            )
            ours, floor, ngclient, minimal = [], [], [], []
            ours_cpu: list[float] = []
            floor_cpu: list[float] = []
            ng_cpu: list[float] = []
            for _ in range(args.rounds):
                _restore(saved, dev.data_dir)
                floor.append(raw_download(lab, target_url, floor_cpu))
                minimal.append(raw_install(lab, target_url, dev.slots["B"]))
                ngclient.append(plain_ngclient(lab, dev, v2, tmp / "ngclient", ng_cpu))
                device = Device(config)
                started, cpu_started = time.perf_counter(), time.process_time()
                result = update(device)
                ours.append(time.perf_counter() - started)
                ours_cpu.append(time.process_time() - cpu_started)
                device.close()
                assert result.installed and result.version == "2.0.0"
            boot(Device(config))  # commit 2.0.0: nothing newer now
            dev.run("check", check=True)
            lab.server.reset_log()
            dev.run("check", check=True)
            seen = lab.server.requests()
            checks, gets = [], []
            for _ in range(args.rounds * 3):
                gets.append(plain_get(lab, f"{lab.server.url}/metadata/timestamp.json"))
                device = Device(config)
                started = time.perf_counter()
                assert check(device).candidate is None
                checks.append(time.perf_counter() - started)
                device.close()

    size = len(new) / 2**20
    t_ours, t_floor = statistics.median(ours), statistics.median(floor)
    t_check, t_get = statistics.median(checks), statistics.median(gets)
    fetched = ", ".join(f"{r['path']} {r['status']}" for r in seen)
    print(
        f"no-update check: {len(seen)} requests, {sum(r['bytes'] for r in seen)} bytes ({fetched})"
    )
    print(
        f"no-update check: {t_check * 1000:.1f} ms vs plain GET timestamp.json "
        f"{t_get * 1000:.1f} ms: {t_check / t_get:.2f}x"
    )
    per_round = sorted(o / f for o, f in zip(ours, floor, strict=True))
    print(
        f"update {size:.0f} MiB: download+verify+install {t_ours:.3f} s vs raw download + "
        f"SHA-256 {t_floor:.3f} s: {t_ours / t_floor:.2f}x (medians of {args.rounds} "
        f"interleaved rounds; per-round ratios {per_round[0]:.2f}-{per_round[-1]:.2f})"
    )
    c_ours, c_floor = statistics.median(ours_cpu), statistics.median(floor_cpu)
    print(
        f"  client CPU time (all threads): {c_ours:.3f} s vs {c_floor:.3f} s: "
        f"{c_ours / c_floor:.2f}x (less sensitive to other load on the machine)"
    )
    t_min = statistics.median(minimal)
    print(
        f"least possible install (raw download + SHA-256 + write into the slot + fdatasync): "
        f"{t_min:.3f} s: {t_min / t_floor:.2f}x; ours is {t_ours / t_min:.2f}x of that"
    )
    t_ng = statistics.median(ngclient)
    c_ng = statistics.median(ng_cpu)
    print(
        f"for context, ngclient download_target + copy into the slot: {t_ng:.3f} s: "
        f"{t_ng / t_floor:.2f}x; CPU {c_ng:.3f} s: {c_ng / c_floor:.2f}x"
    )
    print(f"peak RSS of `ota-client update` ({size:.0f} MiB image): {rss:.1f} MiB")


if __name__ == "__main__":
    main()
