"""What the JSON API and the web UI share: database sessions, the audit log, the parsing of
probe parameters and subject queries, so that both answer the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from identify.gallery.tables import AuditEntry, Face, Image, Subject, Template
from identify.integers import ID_MAX
from identify.search.encode import MASK_MODES, MaskMode
from identify.search.searcher import FaceAnswer, Probe
from identify.services import services
from identify.web.audit_log import audit
from identify.web.http_errors import ApiError
from identify.web.params import int_param
from identify.web.state import web_state


@contextmanager
def db() -> Iterator[Session]:
    """A session in a transaction, committed at the end (rolled back on error)."""
    with web_state().sessions() as session, session.begin():
        yield session


def audit_page(
    session: Any,
    *,
    action: str | None,
    user_id: str | int | None,
    since: str | None,
    until: str | None,
    page: int,
    per_page: int,
) -> tuple[list[dict[str, Any]], int]:
    """Audit entries, newest first, filtered by action, user and time."""
    where = []
    if action:
        where.append(AuditEntry.action == action)
    if user_id not in (None, ""):
        where.append(
            AuditEntry.user_id == int_param(user_id, "user_id", minimum=-ID_MAX - 1, maximum=ID_MAX)
        )
    for value, op in ((since, "ge"), (until, "le")):
        if value:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ApiError(400, "bad_parameter", f"not an ISO date: {value!r}") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            if op == "le" and len(value) == 10:  # a date: up to the end of that day
                moment += timedelta(days=1) - timedelta(microseconds=1)
            where.append(AuditEntry.at >= moment if op == "ge" else AuditEntry.at <= moment)
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0
    rows = session.scalars(
        select(AuditEntry)
        .where(*where)
        .order_by(AuditEntry.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    from identify.gallery.tables import User

    emails = dict(session.execute(select(User.id, User.email)).all())
    items = [
        {
            "id": e.id,
            "at": e.at.isoformat(),
            "user_id": e.user_id,
            "user": emails.get(e.user_id),
            "action": e.action,
            "target_type": e.target_type,
            "target_id": e.target_id,
            "details": e.details,
        }
        for e in rows
    ]
    return items, int(total)


def read_upload(upload: Any) -> bytes:
    """An uploaded photo's bytes; its size is checked before it is read into memory."""
    limit = services().settings.max_photo_bytes
    upload.stream.seek(0, 2)
    size = upload.stream.tell()
    upload.stream.seek(0)
    if size > limit:
        raise ApiError(413, "image_too_large", f"the image is larger than {limit} bytes")
    return upload.read()


def parse_k(value: Any, default: int = 5) -> int:
    return int_param(value, "k", default=default, minimum=1, maximum=100)


def parse_mask(value: Any) -> MaskMode:
    mask = value or "auto"
    if mask not in MASK_MODES:
        raise ApiError(400, "bad_parameter", f"mask must be one of {', '.join(MASK_MODES)}")
    return cast(MaskMode, mask)


def parse_threshold(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_parameter", "threshold must be a number") from None
    if not -1.0 <= threshold <= 1.0:
        raise ApiError(400, "bad_parameter", "threshold is a cosine: between -1 and 1")
    return threshold


def top_answer(answers: list[FaceAnswer]) -> Any:
    if not answers:
        return None
    return answers[0].decision.to_json()


def audit_search(
    session: Session, user_id: int | None, sha256: str, probe: Probe, via: str
) -> None:
    """Every search is audited: who, when, the probe's hash and the top answer."""
    audit(
        session,
        user_id,
        "identify",
        "probe",
        sha256[:16],
        via=via,
        probe_sha256=sha256,
        faces=len(probe.answers),
        top=top_answer(probe.answers),
    )


# ----- subjects -----------------------------------------------------------------------------


def subject_page(
    session: Session, *, q: str | None, page: int, per_page: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of subjects (by name or external id containing ``q``), with photo counts."""
    where = []
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        where.append(
            or_(
                Subject.name.ilike(pattern, escape="\\"),
                Subject.external_id.ilike(pattern, escape="\\"),
            )
        )
    total = session.scalar(select(func.count()).select_from(Subject).where(*where)) or 0
    images = (
        select(Image.subject_id, func.count(Image.id).label("n"))
        .group_by(Image.subject_id)
        .subquery()
    )
    rows = session.execute(
        select(Subject, func.coalesce(images.c.n, 0))
        .outerjoin(images, images.c.subject_id == Subject.id)
        .where(*where)
        .order_by(Subject.name, Subject.id)
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    return [subject_json(s, images=int(n)) for s, n in rows], int(total)


def subject_json(subject: Subject, *, images: int | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": subject.id,
        "name": subject.name,
        "external_id": subject.external_id,
        "created_at": subject.created_at.isoformat() if subject.created_at else None,
    }
    if images is not None:
        record["image_count"] = images
    return record


def subject_detail(session: Session, subject_id: int) -> dict[str, Any] | None:
    subject = session.scalars(
        select(Subject)
        .where(Subject.id == subject_id)
        .options(selectinload(Subject.images).selectinload(Image.faces))
    ).first()
    if subject is None:
        return None
    record = subject_json(subject, images=len(subject.images))
    record["images"] = [
        {
            "id": image.id,
            "sha256": image.sha256,
            "source": image.source,
            "width": image.width,
            "height": image.height,
            "created_at": image.created_at.isoformat() if image.created_at else None,
            "faces": [
                {
                    "id": face.id,
                    "box": [round(float(v), 2) for v in face.box],
                    "masked": face.masked,
                    "detection_score": round(float(face.detection_score), 4),
                    "part_qualities": [round(float(q), 4) for q in face.part_qualities],
                    "face_quality": face.quality,
                }
                for face in image.faces
            ],
        }
        for image in sorted(subject.images, key=lambda i: i.id)
    ]
    record["templates"] = [
        {
            "kind": t.kind.value,
            "model_version": t.model_version,
            "face_count": t.face_count,
            "version": t.version,
            "updated_at": t.updated_at.isoformat() if t.updated_at else None,
        }
        for t in session.scalars(
            select(Template).where(Template.subject_id == subject_id).order_by(Template.id)
        )
    ]
    return record


def first_face_ids(session: Session, subject_ids: list[int]) -> dict[int, int]:
    """One face id per subject (its first), to show a gallery photo next to a candidate."""
    if not subject_ids:
        return {}
    rows = session.execute(
        select(Image.subject_id, func.min(Face.id))
        .join(Face, Face.image_id == Image.id)
        .where(Image.subject_id.in_(subject_ids))
        .group_by(Image.subject_id)
    ).all()
    return {int(s): int(f) for s, f in rows}
