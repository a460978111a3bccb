"""Entry point of `ota-publish` (publishers' build machines and CI)."""

from __future__ import annotations

from repository.publisher.cli import main

if __name__ == "__main__":
    main()
