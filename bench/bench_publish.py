#!/usr/bin/env python3
"""Publishing a firmware image: `add_targets` time as a ratio of the floor for the same bytes.

Floor: copy the file and SHA-256 it in one pass, fsynced (what any publish must do at least).
Publish: the same plus targets/snapshot/timestamp signing, atomic writes, fsyncs, the lock and
the audit line. The image comes from ../shared/bench/firmware_scenarios.py.

Usage: bench/bench_publish.py [--size-mib 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from repository.create import init_dev
from repository.fsutil import atomic_copy_hashed
from repository.manager import OtaRepository

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "firmware_scenarios.py"


def floor(src: Path, dest_dir: Path) -> float:
    """The least any publish does: one hashed, fsynced copy (the manager's own copy routine)."""
    started = time.perf_counter()
    with open(src, "rb") as f:
        atomic_copy_hashed(f, dest_dir, "copy.bin")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=float, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OTA_KEY_PASSPHRASE", "bench")
    with tempfile.TemporaryDirectory(prefix="ota-bench-") as tmp_name:
        tmp = Path(tmp_name)
        old, new = tmp / "old.bin", tmp / "new.bin"
        subprocess.run(
            [
                sys.executable,
                str(SCENARIOS),
                "--scenario",
                "scattered",
                "--size-mib",
                str(args.size_mib),
                str(old),
                str(new),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        init_dev(tmp / "repo")
        floors, publishes = [], []
        for n in range(args.rounds):
            scratch = tmp / f"floor{n}"
            scratch.mkdir()
            # Files are kept, never deleted: on a thin-provisioned virtual disk, rewriting
            # blocks freed a moment ago is much cheaper than fresh ones, which would favour
            # whichever step ran after a delete.
            os.sync()  # both measurements start with no dirty pages from the other
            floors.append(floor(new, scratch))
            os.sync()
            repo = OtaRepository.load(tmp / "repo")
            started = time.perf_counter()
            repo.add_targets([(new, f"firmware/model-x/fw-{n}.bin", None)])
            publishes.append(time.perf_counter() - started)
        print("floor runs:", " ".join(f"{x:.3f}" for x in floors))
        print("publish runs:", " ".join(f"{x:.3f}" for x in publishes))
        f, p = statistics.median(floors), statistics.median(publishes)
        print(
            f"publish {args.size_mib:g} MiB: {p:.3f}s, floor (hashed copy) {f:.3f}s, "
            f"ratio {p / f:.2f}x (median of {args.rounds})"
        )


if __name__ == "__main__":
    main()
