"""Health and gauges: the database, Redis, the index and the model, and the queue's depth."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text

from identify.gallery.tables import EnrolmentJob, Face, JobStatus, Subject
from identify.services import services
from identify.web.state import web_state


def health_report() -> dict[str, Any]:
    report: dict[str, Any] = {"status": "ok"}
    try:
        with services().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        report["database"] = {"ok": True}
    except Exception as error:
        report["database"] = {"ok": False, "error": type(error).__name__}
        report["status"] = "degraded"
    client = web_state().redis
    if client is None:
        report["redis"] = {"ok": None, "configured": False}
    else:
        try:
            client.ping()
            report["redis"] = {"ok": True, "configured": True}
        except Exception as error:
            report["redis"] = {"ok": False, "configured": True, "error": type(error).__name__}
            report["status"] = "degraded"
    report["index"] = index_state()
    report["model_version"] = report["index"].pop("model_version", None)
    return report


def index_state() -> dict[str, Any]:
    """The loaded gallery's index (its size and kind); `loaded: false` before first use."""
    live = services().opened_index
    if live is None:
        return {"loaded": False, "model_version": None}
    try:
        index = live.index()
        return {
            "loaded": True,
            "templates": len(index),
            "kind": type(index).__name__,
            "model_version": live.model_version,
        }
    except Exception as error:
        return {"loaded": False, "error": type(error).__name__, "model_version": None}


def queue_depth() -> int | None:
    """Tasks waiting in the broker's queue (Redis), else queued/running jobs' pending items."""
    client = web_state().redis
    if client is not None:
        try:
            return int(client.llen(services().settings.queue))
        except Exception:
            return None
    with services().engine.connect() as connection:
        return int(
            connection.scalar(
                select(func.count())
                .select_from(EnrolmentJob)
                .where(EnrolmentJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            )
            or 0
        )


def gallery_counts() -> dict[str, int]:
    with services().engine.connect() as connection:
        subjects = connection.scalar(select(func.count()).select_from(Subject)) or 0
        faces = connection.scalar(select(func.count()).select_from(Face)) or 0
        running = (
            connection.scalar(
                select(func.count())
                .select_from(EnrolmentJob)
                .where(EnrolmentJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            )
            or 0
        )
    return {"subjects": int(subjects), "faces": int(faces), "active_jobs": int(running)}


def gauges() -> dict[str, tuple[str, float | None]]:
    counts = gallery_counts()
    index = index_state()
    return {
        "cqaface_gallery_subjects": ("Subjects in the gallery.", counts["subjects"]),
        "cqaface_gallery_faces": ("Enrolled faces.", counts["faces"]),
        "cqaface_index_templates": (
            "Templates in this process's search index.",
            index.get("templates"),
        ),
        "cqaface_queue_depth": ("Tasks waiting in the broker's queue.", queue_depth()),
        "cqaface_jobs_active": ("Enrolment jobs queued or running.", counts["active_jobs"]),
        "cqaface_event_streams": (
            "Live job-progress streams open in this process.",
            web_state().event_streams.open,
        ),
    }
