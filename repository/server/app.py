"""The Flask application factory and the dispatch between the static path and Flask.

`create_app()` returns a Flask app whose WSGI entry first looks at the path: `metadata/` and
`targets/` go to the lean static handler (`static.py`), everything else to Flask's blueprints
(upload, reports, health). Paths that try to leave the tree never reach either.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, urlsplit

from flask import Flask, Response, current_app, jsonify
from flask import Request as FlaskRequest
from werkzeug.exceptions import BadRequest, HTTPException

from repository.fsutil import make_private_dir
from repository.layout import load_config
from repository.limits import Limits
from repository.server.auth import RegistryCache
from repository.server.reportids import SeenReports, report_ids_path
from repository.server.requestlog import RequestAudit, request_log_path
from repository.server.respond import SECURITY_HEADERS, json_error
from repository.server.settings import ServerSettings, load_settings
from repository.server.static import StaticFiles
from repository.server.throttle import Throttle
from repository.upload import OnlineOnlyRepository

logger = logging.getLogger(__name__)

# hidden or dot segments, backslashes, NUL, and malformed %-escapes: never a valid request
_SUSPICIOUS = re.compile(r"(/\.|\\|\x00|%(?![0-9A-Fa-f]{2}))")
UPLOADS_PER_WORKER = 2  # bodies being received at once; more wait for a 503's Retry-After
_RAW_OK = re.compile(r"^/[A-Za-z0-9._~+/%-]*\Z")


@dataclass
class ServerState:
    """What the views share in one worker process (`app.extensions["ota"]`)."""

    settings: ServerSettings
    repo: OnlineOnlyRepository
    registry: RegistryCache
    throttle: Throttle
    audit: RequestAudit
    upload_lock: threading.Lock
    upload_slots: threading.BoundedSemaphore
    reports: SeenReports


def state() -> ServerState:
    found: ServerState = current_app.extensions["ota"]
    return found


class StagingRequest(FlaskRequest):
    """Uploaded file parts are streamed into the private staging folder, never into memory."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return tempfile.TemporaryFile(dir=state().settings.paths.staging)


def raw_path(environ: dict[str, Any]) -> str | None:
    """The request path as the client sent it (still %-encoded), without the query.

    From gunicorn's `RAW_URI` (or `REQUEST_URI`); an absolute-form target keeps only its path.
    A WSGI server that gives neither gets the decoded `PATH_INFO` quoted again.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        return quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/")
    if raw.startswith(("http://", "https://")):
        raw = urlsplit(raw).path or "/"
    path = raw.split("?", 1)[0]
    return path if path.startswith("/") else None


class MalformedBody(BadRequest):
    """The request body could not be read: a bad chunk size or extension, or a cut-off body."""

    description = "malformed request body"


class GuardedInput:
    """`wsgi.input` whose read errors (the WSGI server's own parse errors for a malformed
    chunked body, a client that went away) become one 400, never a 500 with a traceback."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _guard(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except HTTPException:
            raise
        except Exception as e:  # noqa: BLE001 - the WSGI server's parse errors share no public base
            logger.info("malformed request body: %s", type(e).__name__)
            raise MalformedBody() from None

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._guard(self._stream.read, -1 if size is None else size)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._guard(self._stream.readline, -1 if size is None else size)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = self._guard(self._stream.readlines, hint)
        return lines

    def __iter__(self) -> GuardedInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class Dispatcher:
    """WSGI entry: static GETs take the lean path, the rest goes to Flask."""

    def __init__(
        self, static: StaticFiles, flask_app: Callable[..., Iterable[bytes]], audit: RequestAudit
    ) -> None:
        self.static = static
        self.flask_app = flask_app
        self.audit = audit

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        raw = raw_path(environ)
        if raw is None or not _RAW_OK.match(raw) or _SUSPICIOUS.search(path + raw):
            self.audit.record(
                "bad-path",
                path=(raw or path)[:512],
                remote=environ.get("REMOTE_ADDR", ""),
                flag="bad-path",
                status=400,
            )
            return json_error(start_response, 400, "bad path")
        folder, _, rest = raw[1:].partition("/")
        if folder in ("metadata", "targets"):
            if not rest:
                return json_error(start_response, 404, "not found")  # never a listing
            try:
                return self.static(environ, start_response, folder, rest)
            except Exception:
                logger.exception("unexpected error serving %s", raw[:200])
                return json_error(start_response, 500, "internal error")
        if "wsgi.input" in environ:
            environ["wsgi.input"] = GuardedInput(environ["wsgi.input"])
        return self.flask_app(environ, start_response)


def _error_response(e: HTTPException) -> tuple[Response, int]:
    code = e.code or 500
    message = (e.description if isinstance(e, MalformedBody) else e.name or "error").lower()
    response = jsonify({"error": message})
    if code == 405 and e.get_headers():
        response.headers.extend([h for h in e.get_headers() if h[0] == "Allow"])
    return response, code


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the update server.

    Args:
        config: lower-case keys are server settings (see `ServerSettings`; `repo` is the
            repository folder, else `OTA_REPO`); upper-case keys go to Flask's config.

    Raises:
        BadInputError: no repository, or a bad setting.
        CorruptRepositoryError: the repository config or registry cannot be read.
    """
    config = dict(config or {})
    flask_config = {k: v for k, v in config.items() if k.isupper()}
    settings = load_settings({k: v for k, v in config.items() if not k.isupper()})
    paths = settings.paths
    make_private_dir(paths.staging)
    repo = OnlineOnlyRepository(paths, load_config(paths))
    Limits.from_config(repo.config.extra)  # a bad limits section stops the server at start
    audit = RequestAudit(request_log_path(paths.private))
    registry = RegistryCache(paths, settings.registry_reload_interval)
    throttle = Throttle(
        paths.private / "server-throttle",
        settings.throttle_failures,
        settings.throttle_window,
        settings.throttle_block,
    )
    static = StaticFiles(settings, registry, throttle, audit)
    if settings.uploads and not settings.upload_tokens:
        logger.warning("upload_tokens is false: anyone who reaches this server may send uploads")

    app = Flask(__name__, static_folder=None)
    # never a redirect built from the request's Host header (`//` would get a 308 to it)
    app.url_map.merge_slashes = False
    app.config.update(DEBUG=False, MAX_CONTENT_LENGTH=settings.max_upload_bytes)
    app.config.update(flask_config)
    app.request_class = StagingRequest
    app.extensions["ota"] = ServerState(
        settings,
        repo,
        registry,
        throttle,
        audit,
        threading.Lock(),
        threading.BoundedSemaphore(UPLOADS_PER_WORKER),
        SeenReports(report_ids_path(paths.private)),
    )

    from repository.server.views import health, reports, uploads

    app.register_blueprint(health.bp)
    app.register_blueprint(reports.bp)
    app.register_blueprint(uploads.bp)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[Response, int]:
        return _error_response(e)

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> tuple[Response, int]:
        logger.exception("unexpected error")
        return jsonify({"error": "internal error"}), 500

    @app.after_request
    def headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.wsgi_app = Dispatcher(static, app.wsgi_app, audit)  # type: ignore[method-assign]
    return app
