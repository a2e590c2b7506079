"""One error shape for the JSON API, `{"error": {"code", "message", "details"}}` with the right
status, and plain HTML pages for the web UI; never a traceback in either."""

from __future__ import annotations

import errno
import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from embedder.errors import FaceInputError
from identify.gallery.db import is_outage

log = logging.getLogger("identify.web")

# FaceInputError codes -> HTTP status.
FACE_INPUT_STATUS = {
    "empty_file": 400,
    "not_an_image": 415,
    "unreadable_image": 415,
    "image_too_large": 413,
    "no_face": 422,
    "face_too_small": 422,
    "several_faces": 422,
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}


class ApiError(Exception):
    """An error answered as JSON under /api and as a page elsewhere."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def face_input_error(error: FaceInputError) -> ApiError:
    return ApiError(FACE_INPUT_STATUS.get(error.code, 400), error.code, str(error))


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def error_response(error: ApiError) -> Response:
    if wants_json():
        body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
        response = jsonify(body)
    else:
        response = Response(
            render_template("error.html", error=error), mimetype="text/html; charset=utf-8"
        )
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    if error.status == 401 and wants_json():
        response.headers["WWW-Authenticate"] = 'Bearer realm="cqaface"'
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(FaceInputError)
    def _face_error(error: FaceInputError) -> Response:
        return error_response(face_input_error(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = error.description or error.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is larger than the limit of {limit} bytes"
        return error_response(ApiError(status, _HTTP_CODES.get(status, "http_error"), message))

    @app.errorhandler(DBAPIError)
    def _database_error(error: DBAPIError) -> Response:
        if not error.connection_invalidated and not is_outage(error):
            return _unexpected(error)
        log.warning("database unavailable on %s %s: %s", request.method, request.path, error.orig)
        return error_response(
            ApiError(
                503,
                "unavailable",
                "the database is unavailable; try again shortly",
                headers={"Retry-After": "5"},
            )
        )

    @app.errorhandler(OSError)
    def _storage_error(error: OSError) -> Response:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _unexpected(error)
        log.error("no space left on %s %s: %s", request.method, request.path, error)
        return error_response(
            ApiError(507, "insufficient_storage", "the server has no space left for this upload")
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal", "internal server error"))
