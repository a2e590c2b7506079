"""Everything the web app adds to the Flask app: error handlers, the API and UI blueprints,
request metrics, the rate limiter, cookie and security headers."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, request

from identify.gallery.db import session_factory
from identify.web import http_errors
from identify.web.job_events import StreamSlots
from identify.web.key_usage import KeyUsage
from identify.web.metrics import Metrics
from identify.web.ratelimit import RateLimiter
from identify.web.state import EXTENSION, WebState


def init_web(app: Flask) -> None:
    """Wire the web parts onto ``app``, whose services (and their settings) are made and whose
    RATE_LIMIT and SESSION_COOKIE_SECURE the factory set from them."""
    settings = app.extensions["cqaface"].settings
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="cqaface_session",
    )
    app.config.setdefault("LOGIN_RATE_LIMIT", 20)  # sign-in attempts a minute per address
    state = WebState(
        metrics=Metrics(),
        key_usage=KeyUsage(),
        event_streams=StreamSlots(settings.event_streams),
        rate_limit=RateLimiter(int(app.config["RATE_LIMIT"]), settings.broker_url, settings.queue),
        login_limit=RateLimiter(
            int(app.config["LOGIN_RATE_LIMIT"]), settings.broker_url, settings.queue
        ),
        sessions=session_factory(app.extensions["cqaface"].engine),
        redis=_redis(settings.broker_url),
    )
    app.extensions[EXTENSION] = state
    http_errors.register(app)

    from identify.web.admin import admin
    from identify.web.admin_accounts import accounts_ui
    from identify.web.api import api
    from identify.web.params import IdConverter, check_path_ids

    app.url_map.converters["int"] = IdConverter  # before the routes that use it are added
    app.url_value_preprocessor(check_path_ids)
    app.register_blueprint(api)
    app.register_blueprint(admin)
    app.register_blueprint(accounts_ui)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("started")
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            state.metrics.observe(
                request.method, endpoint, response.status_code, time.perf_counter() - started
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
            )
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _redis(url: str | None) -> Any | None:
    """A client of the broker's Redis (it connects on first use), None for no Redis broker."""
    if not url or not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
