"""Gallery hygiene: the actions that fix what a hygiene report finds (move a face to another
subject, remove it, merge two subjects, undo a merge, dismiss a pair), and the report's rows.

Each action is one transaction that first claims the subjects it changes, in id order, with an
UPDATE of their rows: on PostgreSQL that row lock makes a second action on the same subjects
wait, then see what the first one left (a merged subject is gone: 409); on SQLite the UPDATE
takes the file's write lock before anything is read. Templates are recomputed from the
embedding rows in the same transaction, the audit entry is written with the change, and the
store's ``on_commit`` listeners (the live index) follow after the commit, as for enrolment: a
process killed in between leaves the database whole and the index file stale, which the next
open detects and rebuilds.

The report's computation needs the index (identify.search.hygiene_report); its rows, its
progress and what is still open of it to show are here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from identify.gallery import subject_templates
from identify.gallery.store import GalleryStore, audit
from identify.gallery.tables import (
    Face,
    FindingKind,
    HygieneDismissal,
    HygieneFinding,
    HygieneMerge,
    HygieneReport,
    Image,
    JobStatus,
    Subject,
    utcnow,
)

FINDINGS_SHOWN = 500  # per kind, by a report's JSON (the worst first)


class HygieneError(Exception):
    """A refused action: ``status`` is the HTTP status, ``code`` the stable error code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class NotFound(HygieneError):
    status, code = 404, "not_found"


class Conflict(HygieneError):
    status, code = 409, "conflict"


class Invalid(HygieneError):
    status, code = 422, "invalid"


@dataclass(frozen=True)
class Outcome:
    """What an action changed, as the API, the CLI and the audit log say it."""

    action: str
    subjects: list[int]
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "subjects": self.subjects, **self.details}


# ----- actions ------------------------------------------------------------------------------


def move_face(
    store: GalleryStore, face_id: int, subject_id: int, *, actor: int | None = None
) -> Outcome:
    """Move a face, with the photo it is on, to ``subject_id``; both templates recomputed. A
    photo holding several faces is refused (move it whole from the subject page)."""
    with store.sessions() as session, session.begin():
        image_id, source = _face_home(session, face_id)
        if source == subject_id:
            raise Invalid(f"face {face_id} is already subject {subject_id}'s", field="subject_id")
        _claim(session, [source, subject_id])
        _still(session, face_id, source)
        if session.scalar(select(func.count()).where(Face.image_id == image_id)) != 1:
            raise Conflict(f"face {face_id}'s photo holds several faces: move the photo instead")
        session.execute(update(Image).where(Image.id == image_id).values(subject_id=subject_id))
        subject_templates.recompute(session, [source, subject_id])
        details = {"face_id": face_id, "image_id": image_id, "from": source, "to": subject_id}
        audit(session, actor, "hygiene_move_face", "face", face_id, **details)
    store._committed([source, subject_id])
    return Outcome("move_face", sorted([source, subject_id]), details)


def remove_face(store: GalleryStore, face_id: int, *, actor: int | None = None) -> Outcome:
    """Remove a face with its embeddings (and its photo when it is the photo's only face, so
    that the photo can be enrolled again where it belongs); templates recomputed."""
    with store.sessions() as session, session.begin():
        image_id, subject_id = _face_home(session, face_id)
        _claim(session, [subject_id])
        _still(session, face_id, subject_id)
        alone = session.scalar(select(func.count()).where(Face.image_id == image_id)) == 1
        if alone:
            session.execute(delete(Image).where(Image.id == image_id))
        else:
            session.execute(delete(Face).where(Face.id == face_id))
        subject_templates.recompute(session, subject_id)
        details = {
            "face_id": face_id,
            "image_id": image_id,
            "subject_id": subject_id,
            "image_removed": alone,
        }
        audit(session, actor, "hygiene_remove_face", "face", face_id, **details)
    store._committed([subject_id])
    return Outcome("remove_face", [subject_id], details)


def merge(
    store: GalleryStore, source_id: int, target_id: int, *, actor: int | None = None
) -> Outcome:
    """Merge subject ``source_id`` into ``target_id``: its photos move, the source is deleted,
    the target's templates are recomputed; undoable (:func:`undo_merge`) while the target's
    faces stay as the merge left them."""
    if source_id == target_id:
        raise Invalid(f"cannot merge subject {source_id} into itself", field="target_id")
    with store.sessions() as session, session.begin():
        _claim(session, [source_id, target_id])
        source = session.get(Subject, source_id)
        assert source is not None  # claimed
        image_ids = sorted(
            session.scalars(select(Image.id).where(Image.subject_id == source_id)).all()
        )
        if image_ids:
            session.execute(
                update(Image).where(Image.id.in_(image_ids)).values(subject_id=target_id)
            )
        record = HygieneMerge(
            source_id=source_id,
            target_id=target_id,
            source_name=source.name,
            source_external_id=source.external_id,
            source_details=dict(source.details or {}),
            source_created_at=source.created_at,
            image_ids=image_ids,
            target_state=_state(session, target_id),
            created_by=actor,
        )
        session.add(record)
        session.execute(delete(Subject).where(Subject.id == source_id))
        session.expunge(source)
        subject_templates.recompute(session, target_id)
        session.flush()
        details = {
            "merge_id": record.id,
            "source_id": source_id,
            "source_name": record.source_name,
            "target_id": target_id,
            "images_moved": len(image_ids),
        }
        audit(session, actor, "hygiene_merge", "subject", target_id, **details)
    store._committed([source_id, target_id])
    return Outcome("merge", sorted([source_id, target_id]), details)


def undo_merge(store: GalleryStore, merge_id: int, *, actor: int | None = None) -> Outcome:
    """Undo a merge: the source subject comes back under its id, name and external id with the
    photos that were moved. Refused (409) once the target's faces changed since the merge,
    or when the merge was undone already."""
    with store.sessions() as session, session.begin():
        record = session.get(HygieneMerge, merge_id)
        if record is None:
            raise NotFound(f"no merge {merge_id}")
        source_id, target_id = record.source_id, record.target_id
        try:
            _claim(session, [target_id])
        except NotFound:
            raise Conflict(
                f"merge {merge_id} cannot be undone: subject {target_id} was deleted since"
            ) from None
        session.refresh(record, with_for_update=True)
        if record.undone_at is not None:
            raise Conflict(f"merge {merge_id} was undone already")
        if _state(session, target_id) != record.target_state:
            raise Conflict(
                f"merge {merge_id} cannot be undone: subject {target_id}'s faces changed since"
            )
        external = record.source_external_id
        if external is not None and session.scalar(
            select(Subject.id).where(Subject.external_id == external)
        ):
            raise Conflict(f"merge {merge_id} cannot be undone: external_id {external!r} is taken")
        session.add(
            Subject(
                id=source_id,
                name=record.source_name,
                external_id=external,
                details=dict(record.source_details or {}),
                created_at=record.source_created_at or utcnow(),
            )
        )
        session.flush()
        if record.image_ids:
            session.execute(
                update(Image)
                .where(Image.id.in_(record.image_ids), Image.subject_id == target_id)
                .values(subject_id=source_id)
            )
        subject_templates.recompute(session, [source_id, target_id])
        record.undone_at = utcnow()
        record.undone_by = actor
        details = {
            "merge_id": merge_id,
            "source_id": source_id,
            "target_id": target_id,
            "images_moved": len(record.image_ids),
        }
        audit(session, actor, "hygiene_undo_merge", "subject", source_id, **details)
    store._committed([source_id, target_id])
    return Outcome("undo_merge", sorted([source_id, target_id]), details)


def dismiss(
    store: GalleryStore, subject_a: int, subject_b: int, *, actor: int | None = None
) -> Outcome:
    """Remember that two subjects are two people: the pair is not listed again. Dismissing a
    dismissed pair changes nothing and says so."""
    if subject_a == subject_b:
        raise Invalid(f"a pair is two subjects, not {subject_a} twice", field="subject_b")
    low, high = sorted([subject_a, subject_b])
    with store.sessions() as session, session.begin():
        _claim(session, [low, high])
        known = session.scalar(
            select(HygieneDismissal.id).where(
                HygieneDismissal.subject_a == low, HygieneDismissal.subject_b == high
            )
        )
        details = {"subject_a": low, "subject_b": high, "already": known is not None}
        if known is None:
            session.add(HygieneDismissal(subject_a=low, subject_b=high, created_by=actor))
            audit(session, actor, "hygiene_dismiss", "subject", low, **details)
    return Outcome("dismiss", [low, high], details)


def _face_home(session: Session, face_id: int) -> tuple[int, int]:
    """(image id, subject id) of a face (NotFound when there is no such face)."""
    row = session.execute(
        select(Face.image_id, Image.subject_id)
        .join(Image, Face.image_id == Image.id)
        .where(Face.id == face_id)
    ).first()
    if row is None:
        raise NotFound(f"no face {face_id}", field="face_id")
    return int(row.image_id), int(row.subject_id)


def _still(session: Session, face_id: int, subject_id: int) -> None:
    """The face is still ``subject_id``'s now that its subject is claimed: a merge or a move
    that committed in between took it elsewhere (Conflict), or removed it (NotFound)."""
    if _face_home(session, face_id)[1] != subject_id:
        raise Conflict(f"face {face_id} left subject {subject_id} meanwhile: reload and retry")


def _claim(session: Session, subject_ids: list[int]) -> None:
    """Take the rows of ``subject_ids`` for this transaction, in id order (see the module's
    docstring); a subject that is not there is NotFound, or a Conflict when a merge took it."""
    for subject_id in sorted(set(subject_ids)):
        claimed = session.execute(
            update(Subject)
            .where(Subject.id == subject_id)
            .values(updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed:
            continue
        merged_into = session.scalar(
            select(HygieneMerge.target_id)
            .where(HygieneMerge.source_id == subject_id, HygieneMerge.undone_at.is_(None))
            .order_by(HygieneMerge.id.desc())
        )
        if merged_into is not None:
            raise Conflict(
                f"subject {subject_id} was merged into subject {merged_into}",
                subject_id=subject_id,
                merged_into=merged_into,
            )
        raise NotFound(f"no subject {subject_id}", subject_id=subject_id)


def _state(session: Session, subject_id: int) -> str:
    """A digest of a subject's faces: any face added, moved or removed changes it."""
    faces = session.scalars(
        select(Face.id)
        .join(Image, Face.image_id == Image.id)
        .where(Image.subject_id == subject_id)
        .order_by(Face.id)
    ).all()
    return hashlib.sha256(",".join(map(str, faces)).encode()).hexdigest()


# ----- reports ------------------------------------------------------------------------------


def create_report(store: GalleryStore, threshold: float, *, actor: int | None = None) -> int:
    """A queued report of the store's model version, judged at ``threshold``."""
    with store.sessions() as session, session.begin():
        report = HygieneReport(
            model_version=store.model_version, threshold=float(threshold), created_by=actor
        )
        session.add(report)
        session.flush()
        audit(session, actor, "hygiene_report", "hygiene_report", report.id)
        return report.id


def unfinished_report(store: GalleryStore) -> int | None:
    """The latest report of the store's model left queued or running (a run cut short)."""
    with store.sessions() as session:
        return session.scalar(
            select(HygieneReport.id)
            .where(
                HygieneReport.model_version == store.model_version,
                HygieneReport.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
            )
            .order_by(HygieneReport.id.desc())
        )


def latest_report(store: GalleryStore) -> int | None:
    with store.sessions() as session:
        return session.scalar(
            select(HygieneReport.id)
            .where(HygieneReport.model_version == store.model_version)
            .order_by(HygieneReport.id.desc())
        )


def report_json(store: GalleryStore, report_id: int) -> dict[str, Any]:
    """A report's progress and its findings that still stand: an outlier while its face is
    still its subject's, a pair while both subjects exist and the pair is not dismissed."""
    with store.sessions() as session:
        report = session.get(HygieneReport, report_id)
        if report is None:
            raise NotFound(f"no hygiene report {report_id}")
        outliers = session.execute(
            select(HygieneFinding, Image.id, Image.source, Face.crop_png.is_not(None))
            .join(Face, Face.id == HygieneFinding.face_id)
            .join(
                Image, (Image.id == Face.image_id) & (Image.subject_id == HygieneFinding.subject_id)
            )
            .where(
                HygieneFinding.report_id == report_id, HygieneFinding.kind == FindingKind.OUTLIER
            )
            .order_by(HygieneFinding.score, HygieneFinding.id)
        ).all()
        pairs = session.scalars(
            select(HygieneFinding)
            .where(
                HygieneFinding.report_id == report_id,
                HygieneFinding.kind == FindingKind.SAME_PERSON,
            )
            .order_by(HygieneFinding.score.desc(), HygieneFinding.id)
        ).all()
        dismissed = set(
            session.execute(select(HygieneDismissal.subject_a, HygieneDismissal.subject_b)).all()
        )
        named = {f.subject_id for f, *_ in outliers} | {
            s for f in pairs for s in (f.subject_id, f.other_subject_id)
        }
        named |= {f.other_subject_id for f, *_ in outliers if f.other_subject_id is not None}
        names = dict(
            session.execute(select(Subject.id, Subject.name).where(Subject.id.in_(named))).all()
        )
        open_pairs = [
            f
            for f in pairs
            if f.subject_id in names
            and f.other_subject_id in names
            and (f.subject_id, f.other_subject_id) not in dismissed
        ]
        paired = {(f.subject_id, f.other_subject_id) for f in open_pairs}
        paired |= {(b, a) for a, b in paired}
        return {
            "id": report.id,
            "status": report.status.value,
            "model_version": report.model_version,
            "threshold": round(report.threshold, 5),
            "total": report.total,
            "done": report.done,
            "created_at": _when(report.created_at),
            "started_at": _when(report.started_at),
            "finished_at": _when(report.finished_at),
            "error": report.error,
            "outliers": [
                {
                    "face_id": f.face_id,
                    "image_id": image_id,
                    "source": source,
                    "has_crop": bool(has_crop),
                    "subject_id": f.subject_id,
                    "subject_name": names.get(f.subject_id, ""),
                    "score": round(f.score, 5),
                    # nearer a subject listed as the same person: a merge may settle it
                    "with_pair": (f.subject_id, f.other_subject_id) in paired,
                    "best_other": None
                    if f.other_subject_id not in names
                    else {
                        "subject_id": f.other_subject_id,
                        "name": names[f.other_subject_id],
                        "score": round(f.other_score or 0.0, 5),
                    },
                }
                for f, image_id, source, has_crop in outliers[:FINDINGS_SHOWN]
            ],
            "same_person": [
                {
                    "subject_a": {"subject_id": f.subject_id, "name": names[f.subject_id]},
                    "subject_b": {
                        "subject_id": f.other_subject_id,
                        "name": names[f.other_subject_id],
                    },
                    "score": round(f.score, 5),
                }
                for f in open_pairs[:FINDINGS_SHOWN]
            ],
            "counts": {"outliers": len(outliers), "same_person": len(open_pairs)},
        }


def _when(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()  # SQLite: naive


def start_report(store: GalleryStore, report_id: int, total: int) -> tuple[int, float] | None:
    """Mark a queued or running report running, with ``total`` subjects to scan: (its cursor,
    where to resume; its threshold), or None when it has ended already."""
    with store.sessions() as session, session.begin():
        report = session.get(HygieneReport, report_id, with_for_update=True)
        if report is None:
            raise NotFound(f"no hygiene report {report_id}")
        if report.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            return None
        report.status = JobStatus.RUNNING
        report.started_at = report.started_at or utcnow()
        report.total = max(int(total), report.done)
        return report.cursor, report.threshold


def save_chunk(
    store: GalleryStore,
    report_id: int,
    *,
    cursor: int,
    next_cursor: int,
    scanned: int,
    findings: list[HygieneFinding],
) -> bool:
    """Commit one chunk's findings with the report's new cursor, only if the cursor is still
    where this run found it: two runs of one report never both commit a chunk."""
    with store.sessions() as session, session.begin():
        moved = session.execute(
            update(HygieneReport)
            .where(
                HygieneReport.id == report_id,
                HygieneReport.cursor == cursor,
                HygieneReport.status == JobStatus.RUNNING,
            )
            .values(cursor=next_cursor, done=HygieneReport.done + scanned)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not moved:
            return False
        for finding in findings:
            finding.report_id = report_id
        session.add_all(findings)
        return True


def finish_report(store: GalleryStore, report_id: int, error: str | None = None) -> None:
    with store.sessions() as session, session.begin():
        session.execute(
            update(HygieneReport)
            .where(HygieneReport.id == report_id, HygieneReport.status == JobStatus.RUNNING)
            .values(
                status=JobStatus.FAILED if error else JobStatus.DONE,
                error=error,
                finished_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )


def found_pairs(store: GalleryStore, report_id: int) -> set[tuple[int, int]]:
    """The pairs a report holds already (a resumed run lists each pair once)."""
    with store.sessions() as session:
        rows = session.execute(
            select(HygieneFinding.subject_id, HygieneFinding.other_subject_id).where(
                HygieneFinding.report_id == report_id,
                HygieneFinding.kind == FindingKind.SAME_PERSON,
            )
        ).all()
    return {(int(a), int(b)) for a, b in rows}


def dismissed_pairs(store: GalleryStore) -> set[tuple[int, int]]:
    with store.sessions() as session:
        rows = session.execute(select(HygieneDismissal.subject_a, HygieneDismissal.subject_b))
        return {(int(a), int(b)) for a, b in rows}


def recent_merges(store: GalleryStore, limit: int = 20) -> list[dict[str, Any]]:
    """The latest merges, newest first, with whether each is undone."""
    with store.sessions() as session:
        rows = session.scalars(
            select(HygieneMerge).order_by(HygieneMerge.id.desc()).limit(limit)
        ).all()
        names = dict(
            session.execute(
                select(Subject.id, Subject.name).where(Subject.id.in_({r.target_id for r in rows}))
            ).all()
        )
    return [
        {
            "merge_id": r.id,
            "source_id": r.source_id,
            "source_name": r.source_name,
            "target_id": r.target_id,
            "target_name": names.get(r.target_id),
            "images_moved": len(r.image_ids),
            "created_at": _when(r.created_at),
            "undone_at": _when(r.undone_at),
        }
        for r in rows
    ]
