"""The Flask application factory: configuration from the environment (identify.settings),
overridable per app for tests; the shared services and the Celery app hang off the app."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from identify import settings
from identify.services import Services


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
    )
    from workers.celery_app import celery_init_app

    celery_init_app(app)
    from identify.web.wiring import init_web

    init_web(app)
    return app
