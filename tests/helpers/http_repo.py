"""A plain static HTTP server on 127.0.0.1 (port 0) for driving ngclient in repository tests."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tuf.ngclient import Updater


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def list_directory(self, path: Any) -> None:  # type: ignore[override]
        self.send_error(404)
        return None


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve `folder` read-only; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def fetch_all(
    base_url: str, trusted_root: bytes, cache: Path, paths: list[str]
) -> dict[str, bytes]:
    """A real ngclient refresh, then a verified download of each target path."""
    (cache / "metadata").mkdir(parents=True, exist_ok=True)
    (cache / "targets").mkdir(parents=True, exist_ok=True)
    updater = Updater(
        str(cache / "metadata"),
        f"{base_url}/metadata/",
        str(cache / "targets"),
        f"{base_url}/targets/",
        bootstrap=trusted_root,
    )
    updater.refresh()
    result = {}
    for path in paths:
        info = updater.get_targetinfo(path)
        assert info is not None, f"{path} not found by the client"
        local = updater.download_target(info, str(cache / "targets" / path.replace("/", "_")))
        result[path] = Path(local).read_bytes()
    return result
