"""The gallery's rows: images, faces, embeddings, subject templates and the audit of deletions.

Every change is one database transaction (image, faces, embeddings and templates together).
After it commits, the ids of the subjects it touched go to the ``on_commit`` listeners: the live
index of a searching process (identify.search.live_index) syncs from the committed templates.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identify.gallery import subject_templates
from identify.gallery import vectors as vec
from identify.gallery.db import session_factory
from identify.gallery.tables import (
    AuditEntry,
    Embedding,
    Face,
    Image,
    ItemStatus,
    Subject,
    Template,
    TemplateKind,
)

if TYPE_CHECKING:
    from identify.search.encode import FaceEncoder

_ATTEMPTS = 3  # enrolment transactions retried after losing a race to create a template


@dataclass
class FaceRecord:
    """A face ready to store: geometry, embedding(s), and optionally its aligned crop."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float
    vector: np.ndarray
    quality: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    masked: bool = False
    masked_vector: np.ndarray | None = None  # of a synthetic-masked copy
    crop_png: bytes | None = None
    detector: str | None = None  # the detector's name (CQAFACE_DETECTOR)
    face_quality: float | None = None  # embedder.quality's score in [0, 1]


@dataclass
class EnrolResult:
    """What happened to one photo: a stable status, a reason for people, the rows made."""

    source: str
    status: ItemStatus
    reason: str | None = None
    subject_id: int | None = None
    image_id: int | None = None
    face_ids: list[int] = field(default_factory=list)


@dataclass
class PhotoRecord:
    """An image ready to store: whose it is, what it is, and its embedded faces."""

    subject: int | str  # an id, or a name (the subject is created when absent)
    sha256: str
    size_bytes: int
    faces: list[FaceRecord]
    source: str | None = None
    width: int | None = None
    height: int | None = None
    content: bytes | None = None  # the original bytes, kept under CQAFACE_KEEP=images


def _insert(
    session: Session, entity: type[Image | Face | Embedding], rows: list[dict[str, Any]]
) -> list[int]:
    """INSERT ``rows`` into ``entity``'s table in one statement; their ids, in row order."""
    if not rows:
        return []
    table = entity.__table__
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.execute(statement, rows).scalars())


def _image_row(photo: PhotoRecord, subject_id: int) -> dict[str, Any]:
    return {
        "subject_id": subject_id,
        "sha256": photo.sha256,
        "source": photo.source,
        "size_bytes": photo.size_bytes,
        "width": photo.width,
        "height": photo.height,
        "content": photo.content,
    }


def _face_row(image_id: int, record: FaceRecord) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "box": [float(v) for v in record.box],
        "landmarks": np.asarray(record.landmarks, float).round(3).tolist(),
        "detection_score": float(record.score),
        "masked": bool(record.masked),
        "part_qualities": [float(q) for q in np.asarray(record.quality).reshape(-1)],
        "crop_png": record.crop_png,
        "detector": record.detector,
        "quality": None if record.face_quality is None else float(record.face_quality),
    }


def duplicate(name: str, image_id: int, subject_id: int) -> EnrolResult:
    return EnrolResult(
        name,
        ItemStatus.DUPLICATE,
        f"the same photo was enrolled before (image {image_id}, subject {subject_id})",
        subject_id=subject_id,
        image_id=image_id,
    )


def _lock_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for a subject name."""
    digest = hashlib.blake2b(f"cqaface-subject:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class GalleryStore:
    """Subjects, their photos and their templates for one model version, in the database."""

    def __init__(self, engine: Engine, *, model_version: str, dim: int = 512) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.model_version = model_version
        self.dim = dim
        # Called with the sorted ids of the subjects each committed change touched.
        self.on_commit: list[Callable[[list[int]], None]] = []

    @classmethod
    def for_encoder(cls, engine: Engine, encoder: FaceEncoder) -> GalleryStore:
        """The store of the embeddings ``encoder``'s model makes."""
        dim = int(encoder.embedder.config.embedding_size)
        return cls(engine, model_version=encoder.model_version, dim=dim)

    def _committed(self, subject_ids: Iterable[int]) -> None:
        ids = sorted(set(subject_ids))
        if ids:
            for listener in self.on_commit:
                listener(ids)

    # ----- writes ---------------------------------------------------------------------------

    def add_image(
        self,
        subject: int | str,
        *,
        sha256: str,
        size_bytes: int,
        faces: list[FaceRecord],
        source: str | None = None,
        width: int | None = None,
        height: int | None = None,
        content: bytes | None = None,
    ) -> EnrolResult:
        """:meth:`add_images` for one image."""
        record = PhotoRecord(subject, sha256, size_bytes, faces, source, width, height, content)
        return self.add_images([record])[0]

    def add_images(self, photos: list[PhotoRecord]) -> list[EnrolResult]:
        """Store images with their embedded faces and update their subjects' templates, in one
        transaction; the indexes follow after the commit. A photo whose content is stored
        already (or earlier in ``photos``) is a duplicate and adds nothing."""
        for photo in photos:
            for record in photo.faces:
                if np.asarray(record.vector).shape != (self.dim,):
                    raise ValueError(f"face vectors must have shape ({self.dim},)")
        for attempt in range(_ATTEMPTS):
            try:
                with self.sessions() as session, session.begin():
                    results = self._store(session, photos)
                break
            except IntegrityError:
                # A concurrent transaction enrolled one of these photos (it is a duplicate
                # now), or created one of their templates first (it now exists, and is locked
                # in turn): the next try sees both.
                if attempt == _ATTEMPTS - 1:
                    raise
        self._committed(r.subject_id for r in results if r.status == ItemStatus.ENROLLED)
        return results

    def _store(self, session: Session, photos: list[PhotoRecord]) -> list[EnrolResult]:
        """One INSERT per table for the lot, as Core statements that return the new ids in row
        order: the ORM's unit of work (objects, relationships, flush) cost more per photo than
        the rows themselves, a fifth of a bulk job's database time."""
        stored = {
            sha: (image_id, subject_id)
            for sha, image_id, subject_id in session.execute(
                select(Image.sha256, Image.id, Image.subject_id).where(
                    Image.sha256.in_(sorted({p.sha256 for p in photos}))
                )
            )
        }
        first: dict[str, PhotoRecord] = {}
        for photo in photos:
            if photo.sha256 not in stored:
                first.setdefault(photo.sha256, photo)
        owners = self._owners(session, [p.subject for p in first.values()])
        new = [(p, owners[p.subject].id) for p in first.values()]
        image_ids = _insert(session, Image, [_image_row(p, owner) for p, owner in new])
        faces = [
            (image_id, owner, record)
            for (photo, owner), image_id in zip(new, image_ids, strict=True)
            for record in photo.faces
        ]
        face_ids = _insert(session, Face, [_face_row(image_id, r) for image_id, _, r in faces])
        faces_of: dict[int, list[int]] = defaultdict(list)
        for face_id, (image_id, _, _) in zip(face_ids, faces, strict=True):
            faces_of[image_id].append(face_id)
        self._embed_rows(
            session, [(i, owner, r) for i, (_, owner, r) in zip(face_ids, faces, strict=True)]
        )
        for (photo, owner), image_id in zip(new, image_ids, strict=True):
            stored[photo.sha256] = (image_id, owner)
        return [
            EnrolResult(
                photo.source or photo.sha256,
                ItemStatus.ENROLLED,
                None,
                stored[photo.sha256][1],
                stored[photo.sha256][0],
                faces_of[stored[photo.sha256][0]],
            )
            if first.get(photo.sha256) is photo
            else duplicate(photo.source or photo.sha256, *stored[photo.sha256])
            for photo in photos
        ]

    def _embed_rows(self, session: Session, faces: list[tuple[int, int, FaceRecord]]) -> None:
        """The embedding rows of (face id, subject id, record) faces; their unit vectors are
        added to the subjects' templates."""
        rows: list[dict[str, Any]] = []
        contributions: dict[tuple[int, TemplateKind], list[np.ndarray]] = defaultdict(list)
        for face_id, subject_id, record in faces:
            for kind, vector in (
                (TemplateKind.NORMAL, record.vector),
                (TemplateKind.MASKED, record.masked_vector),
            ):
                if vector is None:
                    continue
                unit = vec.normalise(np.asarray(vector, np.float32))
                rows.append(
                    {
                        "face_id": face_id,
                        "model_version": self.model_version,
                        "kind": kind,
                        "dim": len(unit),
                        "vector": vec.to_bytes(unit),
                    }
                )
                target = subject_templates.contributes_to(record.masked, kind)
                contributions[(subject_id, target)].append(unit)
        _insert(session, Embedding, rows)
        subject_templates.add_vectors(session, self.model_version, contributions)

    def _owners(self, session: Session, subjects: list[int | str]) -> dict[int | str, Subject]:
        """The subjects of ``subjects`` (ids, or names: created when absent), row-locked in id
        order: the lock serialises template updates of a subject across processes, and the
        order keeps two writers from waiting on each other."""
        ids = sorted({s for s in subjects if isinstance(s, int)})
        names = sorted({s for s in subjects if isinstance(s, str)})
        by_name = self._named(session, names)
        wanted = ids + [subject.id for subject in by_name.values()]
        locked = {
            subject.id: subject
            for subject in session.scalars(
                select(Subject).where(Subject.id.in_(wanted)).order_by(Subject.id).with_for_update()
            )
        }
        missing = [i for i in ids if i not in locked]
        if missing:
            raise LookupError(f"no subject with id {missing[0]}")
        return {**{i: locked[i] for i in ids}, **{n: locked[s.id] for n, s in by_name.items()}}

    def _named(self, session: Session, names: list[str]) -> dict[str, Subject]:
        """The first subject of each name, created when there is none. On PostgreSQL a
        transaction-scoped advisory lock per name (taken in a fixed order) makes two workers
        enrolling the same new person create one subject, not two."""
        if not names:
            return {}
        if session.get_bind().dialect.name == "postgresql":
            for key in sorted({_lock_key(name) for name in names}):
                session.execute(select(func.pg_advisory_xact_lock(key)))
        found: dict[str, Subject] = {}
        for subject in session.scalars(
            select(Subject).where(Subject.name.in_(names)).order_by(Subject.id)
        ):
            found.setdefault(subject.name, subject)
        for name in names:
            if name not in found:
                found[name] = Subject(name=name, details={})
                session.add(found[name])
        session.flush()
        return found

    def known(self, shas: list[str]) -> dict[str, tuple[int, int]]:
        """sha256 -> (image id, subject id) of the photos among ``shas`` enrolled before."""
        if not shas:
            return {}
        with self.sessions() as session:
            rows = session.execute(
                select(Image.sha256, Image.id, Image.subject_id).where(
                    Image.sha256.in_(sorted(set(shas)))
                )
            ).all()
        return {sha: (image_id, subject_id) for sha, image_id, subject_id in rows}

    def delete_subject(self, subject_id: int, *, actor: int | None = None) -> bool:
        """Delete a subject with its images, faces, embeddings and templates."""
        with self.sessions() as session, session.begin():
            subject = session.get(Subject, subject_id)
            if subject is None:
                return False
            audit(session, actor, "delete_subject", "subject", subject_id, name=subject.name)
            session.delete(subject)
        self._committed([subject_id])
        return True

    def delete_image(self, image_id: int, *, actor: int | None = None) -> bool:
        """Delete an image with its faces and embeddings; its subject's templates are
        recomputed from what remains (or deleted when nothing does)."""
        return self._delete_part(Image, "image", image_id, actor, lambda i: i.subject_id)

    def delete_face(self, face_id: int, *, actor: int | None = None) -> bool:
        """Delete one face (a wrong detection) with its embeddings; templates recomputed."""
        return self._delete_part(Face, "face", face_id, actor, lambda f: f.image.subject_id)

    def _delete_part(
        self,
        entity: type[Image | Face],
        target: str,
        row_id: int,
        actor: int | None,
        subject_of: Callable[[Any], int],
    ) -> bool:
        """Delete an image or a face, audited, and recompute its subject's templates."""
        with self.sessions() as session, session.begin():
            row = session.get(entity, row_id)
            if row is None:
                return False
            subject_id = subject_of(row)
            audit(session, actor, f"delete_{target}", target, row_id, subject_id=subject_id)
            session.delete(row)
            session.flush()
            subject_templates.recompute(session, subject_id)
        self._committed([subject_id])
        return True

    # ----- reads ----------------------------------------------------------------------------

    def names(self, subject_ids: Iterable[int]) -> dict[int, str]:
        ids = sorted({int(i) for i in subject_ids if i >= 0})
        if not ids:
            return {}
        with self.sessions() as session:
            rows = session.execute(select(Subject.id, Subject.name).where(Subject.id.in_(ids)))
            return {int(i): str(n) for i, n in rows}

    def template(self, subject_id: int, kind: TemplateKind = TemplateKind.NORMAL) -> np.ndarray:
        """A subject's template vector for the current model (LookupError if none)."""
        with self.sessions() as session:
            row = session.execute(
                select(Template.dim, Template.vector).where(
                    Template.subject_id == subject_id,
                    Template.model_version == self.model_version,
                    Template.kind == kind,
                )
            ).first()
        if row is None:
            raise LookupError(f"subject {subject_id} has no {kind.value} template")
        return vec.from_bytes(row.vector, row.dim)


def audit(
    session: Session,
    actor: int | None,
    action: str,
    target: str,
    target_id: int,
    /,
    **details: Any,
) -> None:
    """A row of the audit log, in the transaction of the change it records (positional
    arguments only, so that any detail, `target_id` included, can be named)."""
    session.add(
        AuditEntry(
            user_id=actor,
            action=action,
            target_type=target,
            target_id=str(target_id),
            details=details,
        )
    )
