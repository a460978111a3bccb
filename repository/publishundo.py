"""Undo what a failed publish wrote (a full disk, a quota), so nothing is left half-made.

Under the writer lock, before the first write, `PublishUndo.start` notes the names in
`metadata/` and the bytes of `timestamp.json`; each stored target file is noted as it is
stored, and only if it was not there before. If the publish then fails before `timestamp.json`
changed, nothing it wrote is referenced by any published metadata: `undo()` removes the new
versioned metadata files and the new target files. Once `timestamp.json` changed, the publish
is complete and nothing is removed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_no_space(error: BaseException) -> bool:
    """True for an OSError saying the file system (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


def _timestamp(metadata: Path) -> bytes | None:
    try:
        return (metadata / "timestamp.json").read_bytes()
    except FileNotFoundError:
        return None


class PublishUndo:
    """What one publish added to `metadata/` and `targets/`, to remove it if it fails."""

    def __init__(self, metadata: Path) -> None:
        self._metadata = metadata
        self._names = set(os.listdir(metadata))
        self._timestamp = _timestamp(metadata)
        self._targets: list[Path] = []

    def will_store(self, final: Path) -> None:
        """Note a target file about to be stored at `final`, unless it exists already (the same
        bytes, published before: never removed)."""
        if not final.exists():
            self._targets.append(final)

    def undo(self) -> list[str]:
        """Remove what this publish added, if nothing published refers to it yet.

        Returns:
            The removed files, relative to their folder's parent (for the log).
        """
        if _timestamp(self._metadata) != self._timestamp:
            return []  # timestamp.json was replaced: the publish is complete, keep everything
        removed = []
        for name in sorted(set(os.listdir(self._metadata)) - self._names):
            if name.endswith(".json") and name != "timestamp.json":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._metadata / name)
                    removed.append(f"metadata/{name}")
        for final in self._targets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final)
                removed.append(f"targets/.../{final.name}")
        if removed:
            logger.info("removed what a failed publish wrote: %s", ", ".join(removed))
        return removed
