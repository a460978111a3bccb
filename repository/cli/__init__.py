"""`ota-repo`: the security team's and operator's command line.

Commands live in the modules of this package by concern; each registers itself on `cli`.
"""

from __future__ import annotations

import importlib
import pkgutil

from repository.cli._base import cli, main

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["cli", "main"]
