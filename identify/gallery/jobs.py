"""Bulk enrolment as a job: every photo becomes a job item whose outcome (status and reason) is
written back, so that progress can be read at any time from the database, and a job cut short
(a worker killed, a task delivered twice) ends with every photo enrolled exactly once.

Nothing here knows about Celery: the workers' tasks and the in-process runner both call
:func:`process_items` on ranges of item ids, then :func:`complete_job`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from identify.gallery.db import session_factory
from identify.gallery.enroller import PHOTO_SUFFIXES, Enroller, photos_by_subject
from identify.gallery.store import EnrolResult, GalleryStore
from identify.gallery.tables import (
    JOB_PATH_LENGTH,
    EnrolmentJob,
    Image,
    ItemStatus,
    JobItem,
    JobKind,
    JobStatus,
    utcnow,
)
from identify.subject_names import SubjectNameError, printable, subject_name

# Errors of the moment (the database restarting, a connection dropped): retry the task.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    ConnectionError,
    TimeoutError,
)
FAILED_SHOWN = 100  # non-enrolled items listed by a progress report
_TERMINAL_JOB = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

Target = GalleryStore | Engine


def _sessions(target: Target) -> sessionmaker[Session]:
    return target.sessions if isinstance(target, GalleryStore) else session_factory(target)


@dataclass
class JobProgress:
    """Where a job stands; :meth:`to_json` is what the API and the PROGRESS state carry."""

    job_id: int
    status: JobStatus
    total: int
    counts: dict[str, int]  # item status -> number of items
    kind: str = JobKind.FOLDER.value
    source: str = ""
    task_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    rate_per_s: float | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.total - self.counts.get(ItemStatus.PENDING.value, 0)

    @property
    def eta_s(self) -> float | None:
        if self.status in _TERMINAL_JOB:
            return 0.0 if self.status == JobStatus.DONE else None
        if not self.rate_per_s:
            return None
        return round((self.total - self.done) / self.rate_per_s, 1)

    def to_json(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return None if moment is None else _aware(moment).isoformat()

        return {
            "id": self.job_id,
            "status": self.status.value,
            "kind": self.kind,
            "source": self.source,
            "task_id": self.task_id,
            "total": self.total,
            "done": self.done,
            "counts": self.counts,
            "rate_per_s": self.rate_per_s,
            "eta_s": self.eta_s,
            "created_at": when(self.created_at),
            "started_at": when(self.started_at),
            "finished_at": when(self.finished_at),
            "error": self.error,
            "failed": self.failed,
        }


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_job(
    target: Target,
    photos: Iterable[tuple[str, str | os.PathLike[str]]] | str | os.PathLike[str],
    *,
    source: str | None = None,
    kind: JobKind | str = JobKind.FOLDER,
    user_id: int | None = None,
    options: dict[str, Any] | None = None,
) -> int:
    """A queued job with one pending item per (subject name, photo path); a folder (path)
    stands for its `<subject>/<photo>` photos. A path listed twice is one item."""
    if isinstance(photos, str | os.PathLike):
        source = source or str(photos)
        photos = photos_by_subject(photos)
    unique = {str(path): str(subject) for subject, path in photos}
    with _sessions(target)() as session, session.begin():
        job = EnrolmentJob(
            source=(source or "")[:1024],
            kind=JobKind(kind),
            total_items=len(unique),
            created_by=user_id,
            options=options,
        )
        session.add(job)
        session.flush()
        rows = [_new_item(job.id, path, subject) for path, subject in unique.items()]
        for start in range(0, len(rows), 5000):
            session.execute(insert(JobItem), rows[start : start + 5000])
        return job.id


def _new_item(job_id: int, path: str, subject: str) -> dict[str, Any]:
    """A job item's row: pending, or already failed when its subject name breaks the name
    policy or its path is longer than the column. A refused item keeps its names as data, in
    a form safe to show; the rest of the job goes on."""
    row = {"job_id": job_id, "attempts": 0, "updated_at": utcnow()}
    name, refusal = "", None
    try:
        name = subject_name(subject)
    except SubjectNameError as error:
        refusal = str(error)
    if refusal is None and len(path) > JOB_PATH_LENGTH:
        refusal = f"the photo's path has {len(path)} characters, more than {JOB_PATH_LENGTH}"
    if refusal is None:
        return {**row, "path": path, "subject_name": name, "status": ItemStatus.PENDING}
    return {
        **row,
        "path": _shown_path(path),
        "subject_name": printable(subject),
        "status": ItemStatus.FAILED,
        "reason": refusal,
        "finished_at": utcnow(),
    }


def _shown_path(path: str) -> str:
    """A refused item's path as data: printable, and when too long cut to the column with a
    hash of the whole (two long paths that share their start stay two items)."""
    shown = printable(path, limit=len(path) * 8)
    if len(shown) <= JOB_PATH_LENGTH:
        return shown
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{printable(path, limit=JOB_PATH_LENGTH - 17)}#{digest}"


def upload_file(work_dir: str | os.PathLike[str], member: str) -> Path:
    """Where the photo of an uploaded archive's member ``member`` is stored: under a name
    made from a hash of the member's name. The member's name is outside text (it may be longer
    than a file name can be, or hold anything): it stays data (the job item's path, the
    image's source) and never becomes a path."""
    suffix = PurePosixPath(member).suffix.lower()
    digest = hashlib.sha256(member.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return Path(work_dir) / f"{digest}{suffix if suffix in PHOTO_SUFFIXES else ''}"


def _stored(work_dir: str | None, path: str) -> str | Path:
    """The file of a job item: its path, or for an uploaded archive its stored upload."""
    return path if work_dir is None else upload_file(work_dir, path)


def start_job(target: Target, job_id: int, *, task_id: str | None = None) -> bool:
    """Mark a job running (False when it was cancelled: nothing more is to be done)."""
    with _sessions(target)() as session, session.begin():
        job = session.get(EnrolmentJob, job_id, with_for_update=True)
        if job is None:
            raise LookupError(f"no enrolment job {job_id}")
        if job.status == JobStatus.CANCELLED:
            return False
        job.status = JobStatus.RUNNING
        job.error = None
        job.finished_at = None
        job.started_at = job.started_at or utcnow()
        job.task_id = task_id or job.task_id
        return True


def assign_task(target: Target, job_id: int, task_id: str) -> None:
    """Record the id of the task that runs the job (its PROGRESS state is published there)."""
    with _sessions(target)() as session, session.begin():
        session.execute(
            update(EnrolmentJob).where(EnrolmentJob.id == job_id).values(task_id=task_id)
        )


def pending_ranges(target: Target, job_id: int, chunk: int) -> list[tuple[int, int]]:
    """The job's pending items as (first id, last id) ranges of at most ``chunk`` items: one
    task each, so that a task's arguments stay small whatever the job's size."""
    with _sessions(target)() as session:
        ids = session.scalars(
            select(JobItem.id)
            .where(JobItem.job_id == job_id, JobItem.status == ItemStatus.PENDING)
            .order_by(JobItem.id)
        ).all()
    return [(ids[k], ids[min(k + chunk, len(ids)) - 1]) for k in range(0, len(ids), chunk)]


def process_items(
    enroller: Enroller,
    job_id: int,
    first_id: int,
    last_id: int,
    *,
    batch: int | None = None,
    on_item: Callable[[EnrolResult], None] | None = None,
) -> int:
    """Enrol the pending items of ``[first_id, last_id]``, ``batch`` photos embedded at once;
    returns how many were recorded. Safe to run twice, even concurrently: an item is written
    once (pending -> final), and enrolment is idempotent by content hash.

    Every try of an item is counted first: an item tried before (its worker died, or it
    raised) is retried alone, and after CQAFACE_ITEM_ATTEMPTS tries it ends `failed`.
    Transient errors (database, network) propagate, for the task to retry with backoff."""
    batch = batch or enroller.settings.enrol_batch
    most = enroller.settings.item_attempts
    sessions = enroller.store.sessions
    recorded = 0
    while True:
        with sessions() as session:
            job = session.execute(
                select(EnrolmentJob.status, EnrolmentJob.options).where(EnrolmentJob.id == job_id)
            ).first()
            if job is None or job.status == JobStatus.CANCELLED:
                return recorded
            items = session.execute(
                select(JobItem.id, JobItem.subject_name, JobItem.path, JobItem.attempts)
                .where(
                    JobItem.job_id == job_id,
                    JobItem.status == ItemStatus.PENDING,
                    JobItem.id.between(first_id, last_id),
                )
                .order_by(JobItem.id)
                .limit(batch)
            ).all()
        if not items:
            return recorded
        tried = [item for item in items if item.attempts > 0]
        group = tried[:1] or items
        exhausted = [item for item in group if item.attempts >= most]
        for item in exhausted:
            recorded += _give_up(sessions, item.id, item.attempts)
        group = [item for item in group if item.attempts < most]
        if not group:
            continue
        _count_attempt(sessions, [item.id for item in group])
        try:
            work_dir = (job.options or {}).get("work_dir")
            results = enroller.enrol_many(
                [(i.subject_name, _stored(work_dir, i.path), i.path) for i in group],
                min_quality=(job.options or {}).get("min_quality"),
            )
        except TRANSIENT_ERRORS:
            raise
        except Exception as error:  # a bug or a library failure: retried alone, then failed
            _note_error(sessions, [item.id for item in group], error)
            continue
        written = _record(sessions, [(item.id, item.path) for item in group], results)
        recorded += len(written)
        if on_item:
            for result in written:
                on_item(result)


def _count_attempt(sessions: sessionmaker[Session], item_ids: list[int]) -> None:
    with sessions() as session, session.begin():
        session.execute(
            update(JobItem)
            .where(JobItem.id.in_(item_ids), JobItem.status == ItemStatus.PENDING)
            .values(attempts=JobItem.attempts + 1, started_at=utcnow())
        )


def _note_error(sessions: sessionmaker[Session], item_ids: list[int], error: Exception) -> None:
    with sessions() as session, session.begin():
        session.execute(
            update(JobItem)
            .where(JobItem.id.in_(item_ids), JobItem.status == ItemStatus.PENDING)
            .values(reason=f"{type(error).__name__}: {error}"[:2000])
        )


def _give_up(sessions: sessionmaker[Session], item_id: int, attempts: int) -> int:
    with sessions() as session, session.begin():
        last = session.scalar(select(JobItem.reason).where(JobItem.id == item_id))
        why = last or "the worker stopped while processing it"
        return session.execute(
            update(JobItem)
            .where(JobItem.id == item_id, JobItem.status == ItemStatus.PENDING)
            .values(
                status=ItemStatus.FAILED,
                reason=f"failed after {attempts} attempts: {why}"[:2000],
                finished_at=utcnow(),
            )
        ).rowcount


def _record(
    sessions: sessionmaker[Session], items: list[tuple[int, str]], results: list[EnrolResult]
) -> list[EnrolResult]:
    """Write the outcomes of (item id, path) items in one transaction, each item once: those
    another delivery of the task wrote first are left alone (and not returned)."""
    with sessions() as session, session.begin():
        pending = set(
            session.scalars(
                select(JobItem.id)
                .where(
                    JobItem.id.in_([item_id for item_id, _ in items]),
                    JobItem.status == ItemStatus.PENDING,
                )
                .with_for_update()
            )
        )
        rows = [
            _outcome(session, item_id, path, result)
            for (item_id, path), result in zip(items, results, strict=True)
            if item_id in pending
        ]
        if rows:
            session.execute(
                update(JobItem.__table__).where(JobItem.id == bindparam("item_id")), rows
            )
    return [
        result for (item_id, _), result in zip(items, results, strict=True) if item_id in pending
    ]


def _outcome(session: Session, item_id: int, path: str, result: EnrolResult) -> dict[str, Any]:
    """The column values that record ``result`` as the outcome of item ``item_id``."""
    status, reason = result.status, result.reason
    if status == ItemStatus.DUPLICATE and result.image_id is not None:
        # This item's own earlier try enrolled the photo, then died before recording it:
        # the image came from this path and no other item claims it.
        source = session.scalar(select(Image.source).where(Image.id == result.image_id))
        claimed = session.scalar(
            select(func.count())
            .select_from(JobItem)
            .where(
                JobItem.image_id == result.image_id,
                JobItem.status == ItemStatus.ENROLLED,
                JobItem.id != item_id,
            )
        )
        if source == path and not claimed:
            status, reason = ItemStatus.ENROLLED, "enrolled by an earlier try of this item"
    return {
        "item_id": item_id,
        "status": status,
        "reason": reason,
        "subject_id": result.subject_id,
        "image_id": result.image_id,
        "finished_at": utcnow(),
    }


def finish_job(target: Target, job_id: int) -> bool:
    """Mark a running job done once no item is pending; True for the one caller that did
    it (who then saves the indexes and removes the job's files)."""
    with _sessions(target)() as session, session.begin():
        pending = session.scalar(
            select(func.count())
            .select_from(JobItem)
            .where(JobItem.job_id == job_id, JobItem.status == ItemStatus.PENDING)
        )
        if pending:
            return False
        return bool(
            session.execute(
                update(EnrolmentJob)
                .where(EnrolmentJob.id == job_id, EnrolmentJob.status == JobStatus.RUNNING)
                .values(status=JobStatus.DONE, finished_at=utcnow(), updated_at=utcnow())
            ).rowcount
        )


def fail_job(target: Target, job_id: int, error: str) -> None:
    with _sessions(target)() as session, session.begin():
        session.execute(
            update(EnrolmentJob)
            .where(EnrolmentJob.id == job_id, EnrolmentJob.status.not_in(_TERMINAL_JOB))
            .values(status=JobStatus.FAILED, error=error[:4000], finished_at=utcnow())
        )


def cancel_job(target: Target, job_id: int, *, uploads: Path) -> bool:
    """Stop a queued or running job: its pending items stay pending, workers skip them; its
    extracted upload under ``uploads`` goes."""
    with _sessions(target)() as session, session.begin():
        if session.get(EnrolmentJob, job_id) is None:
            raise LookupError(f"no enrolment job {job_id}")
        cancelled = session.execute(
            update(EnrolmentJob)
            .where(
                EnrolmentJob.id == job_id,
                EnrolmentJob.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
            )
            .values(status=JobStatus.CANCELLED, finished_at=utcnow())
        ).rowcount
    if cancelled:
        remove_job_files(target, job_id, uploads=uploads)
    return bool(cancelled)


def remove_job_files(target: Target, job_id: int, *, uploads: Path) -> None:
    """Delete the job's extracted upload (only ever under ``uploads``, DATA_DIR/uploads)."""
    with _sessions(target)() as session:
        options = session.scalar(select(EnrolmentJob.options).where(EnrolmentJob.id == job_id))
    work_dir = (options or {}).get("work_dir")
    if not work_dir:
        return
    path = Path(work_dir).resolve()
    if uploads.resolve() in path.parents:
        shutil.rmtree(path, ignore_errors=True)


def run_job(
    enroller: Enroller,
    job_id: int,
    *,
    save_indexes: Callable[[], object],
    batch: int | None = None,
    progress: Callable[[EnrolResult], None] | None = None,
) -> JobProgress:
    """Run a job in this process (the embedded mode: no broker); safe to call again after a
    crash: items already done are not redone. ``save_indexes`` brings the index files up to
    the database once the job is done."""
    store = enroller.store
    if start_job(store, job_id):
        try:
            for first, last in pending_ranges(store, job_id, enroller.settings.enrol_chunk):
                process_items(enroller, job_id, first, last, batch=batch, on_item=progress)
        except Exception as error:
            fail_job(store, job_id, f"{type(error).__name__}: {error}")
            raise
        uploads = enroller.settings.uploads_dir
        complete_job(store, job_id, save_indexes=save_indexes, uploads=uploads)
    return job_progress(store, job_id)


def complete_job(
    target: Target, job_id: int, *, save_indexes: Callable[[], object], uploads: Path
) -> JobProgress | None:
    """End a job whose items are all recorded, the one way both runners end one: mark it done
    (:func:`finish_job`: one caller wins), bring the index files up to the database, remove the
    job's files. Its final report, or None when the job is not over or another caller won."""
    if not finish_job(target, job_id):
        return None
    save_indexes()
    remove_job_files(target, job_id, uploads=uploads)
    return job_progress(target, job_id)


def job_progress(target: Target, job_id: int) -> JobProgress:
    """Where a job stands: status, items per status, rate since it started, and the items
    that were not enrolled (the first FAILED_SHOWN) with their reasons."""
    with _sessions(target)() as session:
        job = session.get(EnrolmentJob, job_id)
        if job is None:
            raise LookupError(f"no enrolment job {job_id}")
        return _progress(session, job)


def publish_running(target: Target, job_id: int, publish: Callable[[JobProgress], None]) -> bool:
    """Hand a running job's progress to ``publish`` while holding its row shared: on
    PostgreSQL :func:`finish_job` waits for ``publish`` to return, so a progress report never
    lands after the final one, which the finishing worker stores only after finish_job."""
    with _sessions(target)() as session, session.begin():
        job = session.get(EnrolmentJob, job_id, with_for_update={"read": True})
        if job is None or job.status != JobStatus.RUNNING:
            return False
        publish(_progress(session, job))
        return True


def _progress(session: Session, job: EnrolmentJob) -> JobProgress:
    job_id = job.id
    counts = {
        s.value: int(n)
        for s, n in session.execute(
            select(JobItem.status, func.count())
            .where(JobItem.job_id == job_id)
            .group_by(JobItem.status)
        ).all()
    }
    last = session.scalar(select(func.max(JobItem.finished_at)).where(JobItem.job_id == job_id))
    failed = session.execute(
        select(JobItem.path, JobItem.subject_name, JobItem.status, JobItem.reason)
        .where(
            JobItem.job_id == job_id,
            JobItem.status.not_in((ItemStatus.PENDING, ItemStatus.ENROLLED)),
        )
        .order_by(JobItem.id)
        .limit(FAILED_SHOWN)
    ).all()
    progress = JobProgress(
        job_id,
        job.status,
        job.total_items,
        counts,
        kind=JobKind(job.kind).value,
        source=job.source,
        task_id=job.task_id,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        failed=[
            {"path": p, "subject": s, "status": st.value, "reason": r} for p, s, st, r in failed
        ],
    )
    if job.started_at is not None and progress.done:
        end = job.finished_at or (last if job.status in _TERMINAL_JOB else None) or utcnow()
        elapsed = (_aware(end) - _aware(job.started_at)).total_seconds()
        progress.rate_per_s = round(progress.done / elapsed, 2) if elapsed > 0 else None
    return progress


def latest_failures(target: Target, job_id: int, limit: int) -> list[dict[str, Any]]:
    """The job's last ``limit`` items that were not enrolled, the latest finished first."""
    with _sessions(target)() as session:
        rows = session.execute(
            select(JobItem.path, JobItem.subject_name, JobItem.status, JobItem.reason)
            .where(
                JobItem.job_id == job_id,
                JobItem.status.not_in((ItemStatus.PENDING, ItemStatus.ENROLLED)),
            )
            .order_by(JobItem.finished_at.desc().nulls_last(), JobItem.id.desc())
            .limit(limit)
        ).all()
    return [{"path": p, "subject": s, "status": st.value, "reason": r} for p, s, st, r in rows]


def stalled_jobs(target: Target, idle_seconds: float) -> list[int]:
    """Running jobs with pending items and no item finished for ``idle_seconds``, and jobs
    handed to a task that has not started them for as long: their tasks may have been lost
    (a broker restarted without persistence)."""
    now = utcnow()
    with _sessions(target)() as session:
        rows = session.execute(
            select(
                EnrolmentJob.id,
                func.coalesce(EnrolmentJob.started_at, EnrolmentJob.created_at),
                func.max(JobItem.finished_at),
                func.count().filter(JobItem.status == ItemStatus.PENDING),
            )
            .join(JobItem, JobItem.job_id == EnrolmentJob.id)
            .where(
                (EnrolmentJob.status == JobStatus.RUNNING)
                | ((EnrolmentJob.status == JobStatus.QUEUED) & EnrolmentJob.task_id.is_not(None))
            )
            .group_by(EnrolmentJob.id, EnrolmentJob.started_at, EnrolmentJob.created_at)
        ).all()
    stalled = []
    for job_id, started, last, pending in rows:
        moment = last or started
        if pending and moment is not None and (now - _aware(moment)).total_seconds() > idle_seconds:
            stalled.append(int(job_id))
    return stalled
