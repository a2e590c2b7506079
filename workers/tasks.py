"""The workers' tasks. An enrolment job is one `cqaface.enrol_job` task that splits the job's
pending items into id ranges, one `cqaface.enrol_chunk` task each; the chunk that finds nothing
left pending marks the job done, saves the indexes and removes the job's files.

Transient errors (database or broker gone for a moment) retry with exponential backoff, a
bounded number of times; bad photos are never an error (they end as item statuses). A job's
progress is in the database, and mirrored as the PROGRESS state of the job's task id, then
SUCCESS once the job is done and its indexes saved.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from identify.gallery import jobs
from identify.services import services

log = logging.getLogger(__name__)

# The task names are the queues' contract with running deployments: never renamed. Callers
# look a task up by name on their own app's Celery (``celery.tasks[ENROL_JOB]``): a shared
# task's module-level object resolves to Celery's current app, the last one a process made.
ENROL_JOB = "cqaface.enrol_job"
ENROL_CHUNK = "cqaface.enrol_chunk"
REBUILD_INDEX = "cqaface.rebuild_index"
REEMBED = "cqaface.reembed"
TASKS = (ENROL_JOB, ENROL_CHUNK, REBUILD_INDEX, REEMBED)

RETRY = {
    "autoretry_for": (*jobs.TRANSIENT_ERRORS, BrokerError, RedisError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}  # and max_retries, CQAFACE_TASK_RETRIES: workers.celery_app.celery_config
_PROGRESS_EVERY_S = 2.0
_FORGET_AFTER_S = 600.0  # a job idle this long in this process is finished or abandoned


@shared_task(bind=True, name=ENROL_JOB, ignore_result=True, **RETRY)
def enrol_job(self: Task, job_id: int) -> None:
    """Dispatch a job's pending items as chunk tasks (again after a crash: the chunks are
    idempotent, so a range sent twice costs a little time and changes nothing)."""
    held = services()
    engine = held.engine
    if not jobs.start_job(engine, job_id):
        return
    ranges = jobs.pending_ranges(engine, job_id, held.settings.enrol_chunk)
    chunk = self.app.tasks[ENROL_CHUNK]
    for first, last in ranges:
        chunk.apply_async((job_id, first, last))
    if not ranges:
        _finish(job_id)


@shared_task(bind=True, name=ENROL_CHUNK, ignore_result=True, **RETRY)
def enrol_chunk(self: Task, job_id: int, first_id: int, last_id: int) -> int:
    done = jobs.process_items(
        services().enroller,
        job_id,
        first_id,
        last_id,
        on_item=lambda _: _publish_now_and_then(job_id),
    )
    if not _finish(job_id):
        _publish_now_and_then(job_id)
    return done


_published: dict[int, float] = {}  # job id -> when this process last published its progress


def _publish_now_and_then(job_id: int) -> None:
    """Publish a job's progress at most every _PROGRESS_EVERY_S from this process: the
    report is several queries, too many to repeat after every photo or small chunk."""
    now = time.monotonic()
    if now - _published.get(job_id, -_PROGRESS_EVERY_S) < _PROGRESS_EVERY_S:
        return
    # Only the process that finishes a job forgets it there; the others forget it here.
    for stale in [job for job, when in _published.items() if now - when > _FORGET_AFTER_S]:
        del _published[stale]
    _published[job_id] = now
    _publish(job_id)


def _finish(job_id: int) -> bool:
    held = services()
    final = jobs.complete_job(
        held.engine, job_id, save_indexes=held.save_indexes, uploads=held.settings.uploads_dir
    )
    if final is None:
        return False
    _published.pop(job_id, None)
    report = final.to_json()
    if report["task_id"]:
        _store(report["task_id"], report, "SUCCESS")
    log.info("enrolment job %s done: %s", job_id, report["counts"])
    return True


def _publish(job_id: int) -> None:
    """The PROGRESS state, stored while the job row is held so that it cannot overwrite the
    SUCCESS of a worker finishing the job meanwhile. While the result backend is away, Celery
    retries a store for up to about 20 s; finishing or cancelling this job waits as long, the
    photos do not (their rows are not held)."""

    def store(progress: jobs.JobProgress) -> None:
        if progress.task_id:
            _store(progress.task_id, progress.to_json(), "PROGRESS")

    jobs.publish_running(services().engine, job_id, store)


def _store(task_id: str, meta: dict[str, Any], state: str) -> None:
    """Best effort: the database holds the truth; a result backend that is away for a moment
    must not fail the work."""
    from celery import current_app

    try:
        current_app.backend.store_result(task_id, meta, state)
    except Exception as error:  # the backend's errors vary by transport
        log.warning("could not publish progress of task %s: %s", task_id, error)


@shared_task(bind=True, name=REBUILD_INDEX, **RETRY)
def rebuild_index(self: Task) -> dict[str, int]:
    """Rebuild the current model's indexes from the database and save them."""
    rebuilt = services().rebuild_indexes()
    return {kind.value: len(opened.index) for kind, opened in rebuilt.items()}


@shared_task(bind=True, name=REEMBED, **RETRY)
def reembed(self: Task, batch_size: int = 64) -> dict[str, Any]:
    """Embed every stored face with the served model (resumable), then build its indexes."""
    return services().reembed(batch_size).to_json()
