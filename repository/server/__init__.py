"""The update server: `create_app()` for gunicorn, see docs/operator.md.

gunicorn -c python:repository.server.gunicorn_conf 'repository.server:create_app()'
"""

from __future__ import annotations

from repository.server.app import create_app

__all__ = ["create_app"]
