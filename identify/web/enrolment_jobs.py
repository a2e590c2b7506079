"""The web side of bulk enrolment: check a source (an uploaded zip, a folder under the import
roots: identify.gallery.sources), make a job of its photos, hand it to the workers through the
services' `submit`, and report on jobs (identify.gallery.jobs)."""

from __future__ import annotations

import re
from typing import IO, Any

from sqlalchemy import func, select

from identify.gallery import jobs, sources
from identify.gallery.tables import EnrolmentJob, User
from identify.services import services
from identify.subject_names import printable
from identify.web.common import audit, db
from identify.web.http_errors import ApiError

_UPLOAD_PATH = re.compile(r"^.*/uploads/[0-9a-f]{32}/")
LATEST_FAILURES = 10  # shown live on a job's page
# identify.gallery.sources.SourceError codes -> HTTP status.
SOURCE_STATUS = {
    "not_a_folder": 400,
    "outside_import_roots": 403,
    "empty_source": 422,
    "not_a_zip": 415,
    "zip_slip": 400,
    "zip_bomb": 413,
    "too_large": 413,
}


def _source_error(error: Exception) -> ApiError:
    code = getattr(error, "code", "bad_source")
    return ApiError(SOURCE_STATUS.get(code, 400), code, str(error))


def start_zip(
    stream: IO[bytes], filename: str, user_id: int | None, min_quality: float | None = None
) -> int:
    """Extract an uploaded archive (safely) and start a job enrolling it; ``min_quality`` is
    the job's own minimum face quality (None: CQAFACE_ENROL_MIN_QUALITY)."""
    # the sender's name for it, shown on the job's page
    return _start(stream, printable(filename), user_id, min_quality)


def start_folder(folder: str, user_id: int | None, min_quality: float | None = None) -> int:
    """Start a job enrolling a server folder, which must lie under CQAFACE_IMPORT_ROOTS."""
    return _start(folder, folder, user_id, min_quality)


def _start(
    source: IO[bytes] | str, name: str, user_id: int | None, min_quality: float | None
) -> int:
    held = services()
    try:
        job = sources.make_job(
            held.engine,
            source,
            settings=held.settings,
            user_id=user_id,
            name=name,
            min_quality=min_quality,
        )
    except sources.SourceError as error:
        raise _source_error(error) from None
    with db() as session:
        audit(
            session,
            user_id,
            "enrolment",
            "job",
            job.id,
            kind=job.kind,
            source=name,
            items=job.items,
            min_quality=min_quality,
        )
    services().submit(job.id)
    return job.id


def progress(job_id: int) -> dict[str, Any]:
    try:
        report = jobs.job_progress(services().engine, job_id).to_json()
    except LookupError:
        raise ApiError(404, "not_found", f"no enrolment job {job_id}") from None
    for item in report.get("failed") or []:  # paths inside the archive, not on the server
        item["path"] = _UPLOAD_PATH.sub("", str(item.get("path", "")))
    return report


def live(job_id: int) -> dict[str, Any]:
    """What a live progress event carries: the report, with the latest failures in place of
    the first ones."""
    report = progress(job_id)
    latest = jobs.latest_failures(services().engine, job_id, LATEST_FAILURES)
    for item in latest:
        item["path"] = _UPLOAD_PATH.sub("", str(item.get("path", "")))
    report["failed"] = latest
    return report


def cancel(job_id: int, user_id: int | None) -> None:
    with db() as session:
        if session.get(EnrolmentJob, job_id) is None:
            raise ApiError(404, "not_found", f"no enrolment job {job_id}")
        audit(session, user_id, "cancel_job", "job", job_id)
    held = services()
    jobs.cancel_job(held.engine, job_id, uploads=held.settings.uploads_dir)


def recent(*, page: int = 1, per_page: int = 20) -> tuple[list[dict[str, Any]], int]:
    """Jobs, newest first, with their progress."""
    with db() as session:
        total = session.scalar(select(func.count()).select_from(EnrolmentJob)) or 0
        ids = session.scalars(
            select(EnrolmentJob.id)
            .order_by(EnrolmentJob.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
        users = dict(session.execute(select(User.id, User.email)).all())
        creators = dict(
            session.execute(
                select(EnrolmentJob.id, EnrolmentJob.created_by).where(EnrolmentJob.id.in_(ids))
            ).all()
        )
    items = []
    for job_id in ids:
        record = progress(job_id)
        record["created_by"] = users.get(creators.get(job_id))
        record.pop("failed", None)
        items.append(record)
    return items, int(total)
