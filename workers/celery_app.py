"""The Celery app, made from the Flask app (Flask's documented pattern): every task runs inside
the app context, so tasks reach the same configuration and services as the web app."""

from __future__ import annotations

from celery import Celery, Task
from flask import Flask


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    broker = app.config.get("BROKER_URL")
    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(
        {
            "broker_url": broker or "memory://",
            "result_backend": broker,
            "task_always_eager": broker is None,  # embedded mode: no broker, tasks in-process
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
        }
    )
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
