"""Bulk enrolment jobs as the web app and the CLI see them: make a job of a source's items,
hand it to the workers (or, with no broker, to a thread of this process), read its progress,
cancel it. The work itself is identify.gallery.jobs, run by workers.tasks."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from kombu.exceptions import ChannelError
from sqlalchemy import Engine

from identify.gallery import jobs
from identify.gallery.jobs import create_job
from workers.tasks import ENROL_JOB

if TYPE_CHECKING:
    from identify.services import Services

__all__ = ["cancel", "create_job", "progress", "redispatch_stalled", "submit"]

log = logging.getLogger(__name__)
_threads: dict[int, threading.Thread] = {}


def submit(job_id: int, app: Flask | None = None) -> None:
    """Start a job: a `cqaface.enrol_job` task of ``app``'s own Celery app when a broker is
    configured, else a background thread of this process (the embedded mode: the caller gets
    its job id back at once)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    if app.extensions["cqaface"].settings.broker_url:
        task_id = uuid.uuid4().hex
        jobs.assign_task(app.extensions["cqaface"].engine, job_id, task_id)
        app.extensions["celery"].tasks[ENROL_JOB].apply_async((job_id,), task_id=task_id)
        return
    thread = threading.Thread(
        target=_run_embedded, args=(app, job_id), name=f"enrolment-job-{job_id}", daemon=True
    )
    _threads[job_id] = thread
    thread.start()


def _run_embedded(app: Flask, job_id: int) -> None:
    with app.app_context():
        try:
            held = app.extensions["cqaface"]
            jobs.run_job(held.enroller, job_id, save_indexes=held.save_indexes)
        except Exception:
            log.exception("enrolment job %s failed", job_id)
        finally:
            _threads.pop(job_id, None)


def wait(job_id: int, timeout: float | None = None) -> None:
    """Wait for an embedded job's thread (tests, and a clean shutdown)."""
    thread = _threads.get(job_id)
    if thread is not None:
        thread.join(timeout)


def progress(target: Engine, job_id: int) -> dict[str, Any]:
    """The job's report: {id, status, kind, source, total, done, counts, rate_per_s, eta_s,
    created_at, started_at, finished_at, failed: [{path, subject, status, reason}]}."""
    return jobs.job_progress(target, job_id).to_json()


def cancel(job_id: int, held: Services | None = None) -> bool:
    """Cancel a queued or running job (its tasks then skip its pending items)."""
    held = held or current_app.extensions["cqaface"]
    return jobs.cancel_job(held.engine, job_id, uploads=held.settings.uploads_dir)


def redispatch_stalled(app: Flask, engine: Engine) -> list[int]:
    """Send again the running jobs that made no progress for CQAFACE_JOB_STALL_S while the
    queue is empty: their tasks were lost (a Redis restart without persistence). Run by each
    worker's watchdog; harmless when two do it, the tasks being idempotent."""
    celery, settings = app.extensions["celery"], app.extensions["cqaface"].settings
    with celery.connection_for_write() as connection:
        try:
            waiting = connection.default_channel.queue_declare(
                settings.queue, passive=True
            ).message_count
        except ChannelError:  # Redis drops an empty queue's list: "no such queue"
            waiting = 0
    if waiting:
        return []
    stalled = jobs.stalled_jobs(engine, settings.job_stall_seconds)
    for job_id in stalled:
        log.warning("enrolment job %s made no progress: dispatching it again", job_id)
        task_id = jobs.job_progress(engine, job_id).task_id
        celery.tasks[ENROL_JOB].apply_async((job_id,), task_id=task_id)
    return stalled
