"""The Flask application factory, the one place that puts the parts together: configuration
from the environment (identify.settings), overridable per app for tests; the shared services,
the Celery app and the web blueprints hang off the app. It sits above identify.web and workers,
which never import each other: the services' `submit` is how the web hands a job on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from identify import settings
from identify.services import Services
from identify.web.wiring import init_web
from workers import enrolment
from workers.celery_app import celery_init_app


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask("identify", template_folder="web/templates", static_folder="web/static")
    app.config.from_mapping(
        DATABASE_URL=settings.database_url(),
        INDEX_DIR=str(settings.index_dir()),
        MODEL_PATH=None,  # the configured model (CQAFACE_MODEL or the shipped one)
        BROKER_URL=settings.broker_url(),
        SECRET_KEY=settings.secret_key(),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes(),
    )
    app.config.update(config or {})
    model = app.config["MODEL_PATH"]
    app.extensions["cqaface"] = Services(
        database_url=app.config["DATABASE_URL"],
        index_dir=Path(app.config["INDEX_DIR"]),
        model_path=Path(model) if model else None,
        submit=lambda job_id: enrolment.submit(job_id, app),
    )
    celery_init_app(app)
    init_web(app)
    return app
