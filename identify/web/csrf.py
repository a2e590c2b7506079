"""CSRF protection of the web UI's forms: a random token kept in the (signed) session and
echoed by every form as a hidden field (or by scripts as the X-CSRF-Token header), compared
in constant time. The JSON API takes no cookies, so it needs none."""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

from identify.web.http_errors import ApiError

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


def token() -> str:
    value = session.get(FIELD)
    if not value:
        value = session[FIELD] = secrets.token_urlsafe(32)
    return value


def check() -> None:
    """Refuse (400) a state-changing request without the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = session.get(FIELD)
    sent = request.form.get(FIELD) or request.headers.get(HEADER) or ""
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        raise ApiError(
            400, "csrf", "the form was not accepted (missing or stale security token): reload it"
        )
