"""Everything the web app adds to the Flask app: error handlers, the API and UI blueprints,
request metrics, the rate limiter, cookie and security headers."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from identify.web import http_errors
from identify.web.job_events import StreamSlots
from identify.web.key_usage import KeyUsage
from identify.web.metrics import Metrics
from identify.web.ratelimit import RateLimiter


def init_web(app: Flask) -> None:
    """Wire the web parts onto ``app``, whose services (and their settings) are made."""
    settings = app.extensions["cqaface"].settings
    app.config.setdefault("RATE_LIMIT", settings.rate_limit)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="cqaface_session",
    )
    app.config.setdefault("SESSION_COOKIE_SECURE", settings.secure_cookies)
    app.extensions["cqaface_metrics"] = Metrics()
    app.extensions["cqaface_key_usage"] = KeyUsage()
    app.extensions["cqaface_event_streams"] = StreamSlots(settings.event_streams)
    app.extensions["cqaface_ratelimit"] = RateLimiter(
        int(app.config["RATE_LIMIT"]), settings.broker_url, settings.queue
    )
    app.config.setdefault("LOGIN_RATE_LIMIT", 20)  # sign-in attempts a minute per address
    app.extensions["cqaface_login_limit"] = RateLimiter(
        int(app.config["LOGIN_RATE_LIMIT"]), settings.broker_url, settings.queue
    )
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
            app.extensions["cqaface_metrics"].observe(
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
