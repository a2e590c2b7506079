"""The Flask application factory, the one place that puts the parts together: the settings,
read once from the environment (identify.settings.Settings) unless a caller gives its own, then
Flask's configuration of them, overridable per app for tests; the shared services, the Celery
app and the web blueprints hang off the app. It sits above identify.web and workers, which
never import each other: the services' `submit` is how the web hands a job on."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from identify.services import Services
from identify.settings import Settings
from identify.web.wiring import init_web
from workers import enrolment
from workers.celery_app import celery_init_app


def create_app(config: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """An app of ``settings`` (default: this process's environment); ``config`` overrides
    Flask keys, among them DATABASE_URL, INDEX_DIR, BROKER_URL, RESULT_BACKEND and MODEL_PATH,
    which then hold for the services and Celery too."""
    settings = settings or Settings.from_env()
    app = Flask("identify", template_folder="web/templates", static_folder="web/static")
    app.config.from_mapping(
        DATABASE_URL=settings.database_url,
        INDEX_DIR=str(settings.index_dir),
        MODEL_PATH=None,  # the configured model (CQAFACE_MODEL or the shipped one)
        BROKER_URL=settings.broker_url,
        RESULT_BACKEND=settings.result_backend_url,
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        RATE_LIMIT=settings.rate_limit,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
    )
    app.config.update(config or {})
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = settings.signing_key()
    settings = dataclasses.replace(
        settings,
        database_url=app.config["DATABASE_URL"],
        index_dir=Path(app.config["INDEX_DIR"]),
        broker_url=app.config["BROKER_URL"],
        result_backend_url=app.config["RESULT_BACKEND"],
    )
    model = app.config["MODEL_PATH"]
    app.extensions["cqaface"] = Services(
        settings,
        model_path=Path(model) if model else None,
        submit=lambda job_id: enrolment.submit(job_id, app),
    )
    celery_init_app(app, settings)
    init_web(app)
    return app
