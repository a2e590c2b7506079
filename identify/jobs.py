"""Bulk enrolment as a job: every photo of a folder becomes a job item, processed one by one
with its outcome (status and reason) written back, so that progress can be watched and a job
interrupted by a dying worker resumes where it stopped. The workers' tasks call these."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from identify.gallery import EnrolResult, Gallery, photos_by_subject
from identify.models import EnrolmentJob, ItemStatus, JobItem, JobStatus, utcnow


@dataclass
class JobProgress:
    job_id: int
    status: JobStatus
    total: int
    counts: dict[str, int]  # item status -> number of items

    @property
    def done(self) -> int:
        return self.total - self.counts.get(ItemStatus.PENDING.value, 0)

    def to_json(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "status": self.status.value,
            "total": self.total,
            "done": self.done,
            "counts": self.counts,
        }


def create_job(
    gallery: Gallery, root: str | os.PathLike[str], *, user_id: int | None = None
) -> int:
    """A queued job with one pending item per photo of `root/<subject>/<photo>`."""
    photos = list(photos_by_subject(root))
    with gallery.sessions() as session, session.begin():
        job = EnrolmentJob(source=str(root), total_items=len(photos), created_by=user_id)
        session.add(job)
        session.flush()
        session.add_all(
            JobItem(job_id=job.id, path=str(path), subject_name=name) for name, path in photos
        )
        return job.id


def run_job(
    gallery: Gallery,
    job_id: int,
    *,
    batch: int = 100,
    progress: Callable[[EnrolResult], None] | None = None,
) -> JobProgress:
    """Process the job's pending items in order; safe to call again after a crash (items
    already done are not redone, and enrolment itself is idempotent)."""
    _set_status(gallery, job_id, JobStatus.RUNNING)
    try:
        while True:
            with gallery.sessions() as session:
                items = session.execute(
                    select(JobItem.id, JobItem.subject_name, JobItem.path)
                    .where(JobItem.job_id == job_id, JobItem.status == ItemStatus.PENDING)
                    .order_by(JobItem.id)
                    .limit(batch)
                ).all()
            if not items:
                break
            for item_id, subject_name, path in items:
                result = gallery.enrol(subject_name, path, source_name=path)
                _record(gallery, item_id, result)
                if progress:
                    progress(result)
    except Exception as error:
        _set_status(gallery, job_id, JobStatus.FAILED, error=f"{type(error).__name__}: {error}")
        raise
    _set_status(gallery, job_id, JobStatus.DONE)
    gallery.save_indexes()
    return job_progress(gallery, job_id)


def job_progress(gallery: Gallery, job_id: int) -> JobProgress:
    """Where a job stands: its status and how many items ended in each status."""
    with gallery.sessions() as session:
        job = session.get(EnrolmentJob, job_id)
        if job is None:
            raise LookupError(f"no enrolment job {job_id}")
        counts = session.execute(
            select(JobItem.status, func.count())
            .where(JobItem.job_id == job_id)
            .group_by(JobItem.status)
        ).all()
        return JobProgress(
            job_id, job.status, job.total_items, {s.value: int(n) for s, n in counts}
        )


def _record(gallery: Gallery, item_id: int, result: EnrolResult) -> None:
    with gallery.sessions() as session, session.begin():
        item = session.get(JobItem, item_id)
        if item is None:  # the job was deleted meanwhile
            return
        item.status = result.status
        item.reason = result.reason
        item.subject_id = result.subject_id
        item.image_id = result.image_id


def _set_status(gallery: Gallery, job_id: int, status: JobStatus, error: str | None = None) -> None:
    with gallery.sessions() as session, session.begin():
        job = session.get(EnrolmentJob, job_id)
        if job is None:
            raise LookupError(f"no enrolment job {job_id}")
        job.status = status
        job.error = error
        if status in (JobStatus.DONE, JobStatus.FAILED):
            job.finished_at = utcnow()
