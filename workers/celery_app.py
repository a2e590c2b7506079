"""The Celery app, made from the Flask app (Flask's documented pattern): every task runs inside
the app context, so tasks reach the same configuration and services as the web app.

Delivery is at least once and made safe: a task is acknowledged only when it ends
(acks_late), given back when its worker dies (task_reject_on_worker_lost), taken one at a
time (prefetch 1), and the tasks are idempotent (items written once, photos by content hash).
Redis redelivers a task that was taken but never acknowledged after the visibility timeout,
which therefore exceeds the longest task.
"""

from __future__ import annotations

import os
import weakref

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

from identify.settings import Settings
from workers.tasks import TASKS


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery's configuration of ``settings``: the broker, the queue, the limits."""
    queue, broker = settings.queue, settings.broker_url
    return {
        "broker_url": broker or "memory://",
        "result_backend": settings.result_backend_url or broker,
        "task_always_eager": broker is None,  # no broker: tasks run in-process
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": queue,
        "task_routes": {"cqaface.*": {"queue": queue}},
        # The queue name also prefixes every broker key: deployments sharing a Redis server
        # (and tests) never see each other's tasks or unacknowledged messages.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": f"{queue}:",
        },
        "task_time_limit": settings.task_time_limit,
        # The tasks' retry budget (their decorators set the backoff).
        "task_annotations": {name: {"max_retries": settings.task_retries} for name in TASKS},
        "task_track_started": True,
        "result_expires": 7 * 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a broker restart: wait for it, for ever
        "worker_concurrency": settings.worker_concurrency,
        "worker_hijack_root_logger": False,
    }


# The apps whose connections a forked pool process drops; held weakly, so that an app its
# process lets go of (tests make hundreds) is freed with its connection pool.
_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(settings))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    _apps.add(app)
    return celery_app


@worker_process_init.connect
def _own_connections(**_: object) -> None:
    """A forked pool process must never use its parent's database connections (two processes
    on one socket read each other's results): drop them without closing."""
    for app in list(_apps):
        app.extensions["cqaface"].engine.dispose(close=False)


@worker_process_init.connect
def _one_thread_per_process(**_: object) -> None:
    """Each worker process embeds on one thread: N processes on N cores beat N threads each
    fighting over the same cores. ONNX Runtime reads CQAFACE_THREADS when this process opens
    its sessions (at its first task)."""
    if any(app.extensions["cqaface"].settings.worker_concurrency > 1 for app in list(_apps)):
        import torch

        torch.set_num_threads(1)
        os.environ["CQAFACE_THREADS"] = "1"


def check_broker(celery_app: Celery) -> None:
    """Connect to the broker once, now: a command that needs it fails at once, with kombu's
    OperationalError (a line from `cqaface`), instead of retrying for ever or leaving a job
    behind that no task will run."""
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
