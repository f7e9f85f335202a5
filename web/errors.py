"""Errors: JSON `{"error": {"code", "message", ...}}` for the API, an error page (or fragment) for the site.

Every message names the problem and the fix. The API never answers with an HTML page, not even
for a 404, a 405, a 413 or an unexpected exception (a 500 whose message carries an id to find
the traceback in the server log).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from engine.concepts import ConceptError, ConceptExists, ConceptNotFound, VersionNotReady
from engine.database import DatabaseError
from engine.diskspace import DiskSpaceError, is_disk_full
from engine.errors import CoinageError, TokenError, UnknownTokenError
from engine.query import ConflictingFields, IndexMismatch, IndexNotFound, PreviewUnavailable, QueryError
from engine.store import StoreError
from trainer import TrainingError
from web.jobs import JobError

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/healthz", "/readyz", "/openapi.json")
DISK_FULL = ("the server's disk is full, so this change was not saved (nothing was changed); searches still "
             "answer. Free space on the data volume (COINAGE_DATA_DIR: old previews, snapshots, collections no alias "
             "points at: `coinage snapshot orphans --drop NAME`) and try again")


class ApiError(Exception):
    """An error a client can fix: HTTP status, a stable code, a message naming the fix, and extra fields."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def missing_field(name: str, what: str = "") -> ApiError:
    return ApiError(400, "missing_field", f"missing field {name!r}{': ' + what if what else ''}", field=name)


def bad_field(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", f"field {name!r}: {message}", field=name)


def from_engine(error: Exception) -> ApiError:
    """An engine error as an ApiError: status and code by type, the engine's own message (it names the fix)."""
    message = str(error)
    if is_disk_full(error):  # a DiskSpaceError names what needed the room; a failed write gets the general fix
        return ApiError(507, "disk_full", message if isinstance(error, DiskSpaceError) else DISK_FULL)
    if isinstance(error, UnknownTokenError):
        return ApiError(400, "unknown_token", message, token=error.placeholder, suggestions=error.suggestions)
    if isinstance(error, ConceptExists):
        return ApiError(409, "concept_exists", message, field="placeholder")
    table = ((ConceptNotFound, 404, "concept_not_found"), (VersionNotReady, 409, "version_not_ready"),
             (IndexNotFound, 503, "index_missing"), (IndexMismatch, 503, "index_mismatch"),
             (PreviewUnavailable, 409, "preview_unavailable"), (ConflictingFields, 400, "conflicting_fields"),
             (QueryError, 400, "bad_query"),
             (TokenError, 400, "bad_token"), (TrainingError, 400, "bad_training_request"),
             (JobError, 404, "job_not_found"), (StoreError, 503, "store_unavailable"),
             (DatabaseError, 503, "database_unavailable"))
    for kind, status, code in table:
        if isinstance(error, kind):
            return ApiError(status, code, message)
    if isinstance(error, ConceptError):
        return ApiError(400, "concept_error", message)
    return ApiError(400, "error", message)


def wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES) or request.path == "/metrics"


def _json_response(error: ApiError) -> Response:
    response = jsonify(error.to_json())
    response.status_code = error.status
    return response


def _page(error: ApiError) -> tuple[str, int]:
    htmx = request.headers.get("HX-Request") == "true"
    template = "partials/error.html" if htmx else "error.html"
    return render_template(template, error=error), error.status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return _json_response(error) if wants_json() else _page(error)

    @app.errorhandler(CoinageError)
    def engine_error(error: CoinageError):
        return api_error(from_engine(error))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        limit = app.config.get("MAX_CONTENT_LENGTH") or 0
        return api_error(ApiError(413, "too_large",
                                  f"the upload is larger than the {limit / 2**20:.0f} MiB the server accepts per "
                                  "request; send fewer or smaller images (the limit is COINAGE_MAX_UPLOAD_MB)"))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        message = error.description or error.name
        if error.code == 404:
            message = f"{request.path} does not exist; see /openapi.json for the API's routes"
            if not wants_json():
                message = f"There is no page at {request.path}. Start again from the search page."
        elif error.code == 405:
            message = f"{request.method} is not allowed on {request.path}; see /openapi.json for the methods"
        result = api_error(ApiError(error.code or 500, code, message))
        if error.code == 405 and isinstance(error, HTTPException):
            resp = app.make_response(result)
            allowed = error.get_headers()
            for name, value in allowed:
                if name.lower() == "allow":
                    resp.headers["Allow"] = value
            return resp
        return result

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        if isinstance(error, HTTPException):  # pragma: no cover - handled above
            return http_error(error)
        if is_disk_full(error):  # a write the disk had no room for: nothing was saved (engine/diskspace.py)
            log.error("%s %s: the disk is full (%s: %s)", request.method, request.path, type(error).__name__, error)
            return api_error(ApiError(507, "disk_full", DISK_FULL))
        ref = uuid.uuid4().hex[:10]
        log.exception("unhandled error %s on %s %s", ref, request.method, request.path)
        return api_error(ApiError(500, "internal_error",
                                  f"internal error {ref} ({type(error).__name__}); the server log has the traceback "
                                  "under this id: please report it with the id", ref=ref))
