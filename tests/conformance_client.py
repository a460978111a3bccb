#!/usr/bin/env python3
"""The tuf-conformance client-under-test CLI, over the device client's own TUF code path.

    conformance_client.py --metadata-dir MD init ROOT_FILE
    conformance_client.py --metadata-url URL --metadata-dir MD refresh
    conformance_client.py --metadata-url URL --metadata-dir MD --target-name T [--target-name T2]
        --target-dir TD --target-base-url URL download

It uses `client.tufclient.TufClient` (ngclient from the cached trusted root) with the device's
`DeviceFetcher` and `client.download`, like `ota-client`, with firmware policy switched off
(the suite's targets carry no firmware fields). Metadata is cached by ngclient in MD as
`<role>.json` with the exact bytes received; targets are written to TD as the URL-quoted target
path, atomically, only when missing or changed. Any failure exits with exactly 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"conformance_client: {message}", file=sys.stderr)
        sys.exit(1)  # the protocol knows only 0 and 1


def _parser() -> _Parser:
    parser = _Parser(description="tuf-conformance client over secure-ota's device client")
    parser.add_argument("--metadata-dir", required=True, type=Path)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append", default=[])
    parser.add_argument("--target-dir", type=Path)
    parser.add_argument("--target-base-url")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    init = sub.add_parser("init")
    init.add_argument("trusted_root", type=Path)
    sub.add_parser("refresh")
    sub.add_parser("download")
    return parser


def _init(metadata_dir: Path, trusted_root: Path) -> None:
    data = trusted_root.read_bytes()
    fd, tmp = tempfile.mkstemp(dir=metadata_dir, prefix=".root.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, metadata_dir / "root.json")


def _is_current(target: TargetFile, dest: Path) -> bool:
    """An artifact downloaded before with matching length and hashes is not fetched again."""
    try:
        with open(dest, "rb") as f:
            target.verify_length_and_hashes(f)
    except (OSError, LengthOrHashMismatchError):
        return False
    return True


def _run(args: argparse.Namespace) -> None:
    from client.download import download_to_file
    from client.errors import UpdateError
    from client.fetcher import DeviceFetcher
    from client.tufclient import TufClient

    if args.command == "init":
        _init(args.metadata_dir, args.trusted_root)
        return
    if not args.metadata_url:
        raise UpdateError("--metadata-url is required")
    fetcher = DeviceFetcher(user_agent="secure-ota-conformance")
    try:
        if args.command == "refresh":
            TufClient(args.metadata_dir, args.metadata_url, None, fetcher, bootstrap=None).refresh()
            return
        if not (args.target_name and args.target_dir and args.target_base_url):
            raise UpdateError("download needs --target-name, --target-dir and --target-base-url")
        tuf = TufClient(
            args.metadata_dir, args.metadata_url, args.target_base_url, fetcher, bootstrap=None
        )
        for name in args.target_name:
            target = tuf.get_target(name)
            dest = args.target_dir / quote(name, "")
            if not _is_current(target, dest):
                download_to_file(tuf, target, dest)
    finally:
        fetcher.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except Exception as e:  # noqa: BLE001 - the adapter's edge: exit 1, one line
        print(f"conformance_client: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
