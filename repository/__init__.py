"""secure-ota repository manager: TUF metadata, keys, signing, publishing and serving."""

from __future__ import annotations

__version__ = "0.1.0"
