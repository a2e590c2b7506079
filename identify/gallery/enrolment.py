"""The gallery service: enrol faces, delete images, faces and subjects, keep the templates and
the in-memory indexes in step with the database.

Every change is one database transaction (image, faces, embeddings and templates together);
the indexes are updated after it commits, from the committed templates, under one lock, so
that concurrent writers leave the index as the database says whatever order they finish in.
A crash between the two leaves a stale index file, which the next start detects (checksum) and
rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from embedder.errors import FaceInputError
from embedder.imageio import load_image
from identify import settings
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
from identify.search.encode import FaceEncoder
from identify.search.index import TemplateIndex
from identify.search.index_store import (
    OpenedIndex,
    TemplateStates,
    open_index,
    row_tag,
    template_states,
)

# FaceInputError codes -> job item statuses (the stable vocabulary of enrolment reports).
_STATUS_OF_CODE = {
    "empty_file": ItemStatus.UNREADABLE,
    "not_an_image": ItemStatus.UNREADABLE,
    "unreadable_image": ItemStatus.UNREADABLE,
    "image_too_large": ItemStatus.TOO_LARGE,
    "no_face": ItemStatus.NO_FACE,
    "face_too_small": ItemStatus.NO_FACE,
    "several_faces": ItemStatus.SEVERAL_FACES,
}
_ATTEMPTS = 3  # enrolment transactions retried after losing a race to create a template
PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)


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


@dataclass
class _Prepared:
    """A photo read and hashed, then decoded and detected, waiting for its faces' embedding."""

    subject: int | str
    name: str
    data: bytes
    sha: str
    image: np.ndarray = field(default_factory=lambda: np.empty((0, 0, 3), np.uint8))
    faces: list[Any] = field(default_factory=list)


def status_of(error: FaceInputError) -> ItemStatus:
    return _STATUS_OF_CODE.get(error.code, ItemStatus.FAILED)


_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]


def png_bytes(crop: np.ndarray) -> bytes:
    """An RGB crop as PNG, lossless for re-embedding. Level 1 with zlib's run-length strategy:
    0.67 ms and 19.3 KiB a celeba crop, where level 1's default strategy took 0.86 ms and 19.9
    KiB, and OpenCV's own default 0.47 ms but 23.3 KiB (200 crops, side by side; Pillow was
    slower still)."""
    ok, encoded = cv2.imencode(".png", crop[..., ::-1], _PNG_PARAMS)
    if not ok:
        raise ValueError(f"cannot encode a crop of shape {crop.shape} as PNG")
    return encoded.tobytes()


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
    }


def _duplicate(name: str, image_id: int, subject_id: int) -> EnrolResult:
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


class Gallery:
    """Subjects and their templates in the database, mirrored in one index per template kind
    for the current model version."""

    def __init__(
        self,
        engine: Engine,
        *,
        model_version: str,
        encoder: FaceEncoder | None = None,
        dim: int = 512,
        index_dir: Path | None = None,
        keep: settings.KeepPolicy | None = None,
        masked_templates: bool | None = None,
        index_options: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.model_version = model_version
        self.encoder = encoder
        self.dim = dim
        self.index_dir = index_dir or settings.index_dir()
        self.keep = keep or settings.keep()
        self.masked_templates = (
            settings.masked_templates() if masked_templates is None else masked_templates
        )
        self.index_options = dict(index_options or {})
        self._sync_lock = threading.Lock()
        self._indexes: dict[TemplateKind, OpenedIndex] = {}
        # Tags of the templates this process synced since the last refresh (None: removed).
        self._pending: dict[TemplateKind, dict[int, int | None]] = {k: {} for k in TemplateKind}

    @classmethod
    def for_encoder(cls, engine: Engine, encoder: FaceEncoder, **options: Any) -> Gallery:
        """A gallery whose embeddings come from ``encoder``'s model."""
        dim = int(encoder.embedder.config.embedding_size)
        return cls(engine, model_version=encoder.model_version, encoder=encoder, dim=dim, **options)

    # ----- indexes --------------------------------------------------------------------------

    def index(self, kind: TemplateKind = TemplateKind.NORMAL) -> TemplateIndex:
        """The index of ``kind`` templates, opened (loaded or rebuilt) on first use."""
        return self.open_indexes()[kind].index

    def open_indexes(self) -> dict[TemplateKind, OpenedIndex]:
        """The indexes, opened on first use. Once open, no lock is taken here: a search must
        not wait for an enrolment's database round trip, only for its index write."""
        opened = self._indexes
        if opened:
            return opened
        with self._sync_lock:
            if not self._indexes:
                with self.sessions() as session:
                    self._indexes = {  # published whole: readers never see half of it
                        kind: open_index(
                            session,
                            self.model_version,
                            kind,
                            dim=self.dim,
                            directory=self.index_dir,
                            **self.index_options,
                        )
                        for kind in TemplateKind
                    }
            return self._indexes

    def save_indexes(self) -> list[Path]:
        """Bring the indexes up to the database (:meth:`refresh`) and persist them with the
        state they now hold. Call at shutdown, after a bulk job, or periodically: the file is
        only a cache of the database, and never claims a state its index does not hold."""
        paths = []
        with self._sync_lock:
            self._refresh_locked()
            for opened in self._indexes.values():
                paths.append(opened.index.save(opened.path, opened.states.checksum))
        return paths

    def refresh(self) -> int:
        """Apply what other processes (workers) changed in the database since the indexes were
        opened or last refreshed; returns how many subjects changed. One pass over the
        template rows (no vectors), then only the changed templates are read."""
        with self._sync_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> int:
        changed_total = 0
        with self.sessions() as session:
            for kind, opened in self._indexes.items():
                states = template_states(session, self.model_version, kind)
                changed, removed = _difference(opened.states, self._pending[kind], states)
                opened.index.remove(removed)
                for start in range(0, len(changed), 1000):
                    chunk = changed[start : start + 1000].tolist()
                    rows = session.execute(
                        select(Template.subject_id, Template.dim, Template.vector).where(
                            Template.subject_id.in_(chunk),
                            Template.model_version == self.model_version,
                            Template.kind == kind,
                        )
                    ).all()
                    if rows:
                        opened.index.upsert(
                            [r.subject_id for r in rows],
                            np.stack([vec.from_bytes(r.vector, r.dim) for r in rows]),
                        )
                opened.states = states
                self._pending[kind] = {}
                changed_total += len(changed) + len(removed)
        return changed_total

    def _sync(self, subject_ids: Iterable[int]) -> None:
        """Make the open indexes hold exactly the committed templates of ``subject_ids``."""
        ids = sorted(set(subject_ids))
        if not ids or not self._indexes:
            return
        with self._sync_lock, self.sessions() as session:
            rows = session.execute(
                select(
                    Template.subject_id,
                    Template.kind,
                    Template.dim,
                    Template.vector,
                    Template.id,
                    Template.version,
                    Template.updated_at,
                    Template.face_count,
                ).where(Template.subject_id.in_(ids), Template.model_version == self.model_version)
            ).all()
            for kind, opened in self._indexes.items():
                mine = [r for r in rows if r.kind == kind]
                found = {r.subject_id for r in mine}
                gone = [sid for sid in ids if sid not in found]
                opened.index.remove(gone)
                if mine:
                    opened.index.upsert(
                        [r.subject_id for r in mine],
                        np.stack([vec.from_bytes(r.vector, r.dim) for r in mine]),
                    )
                pending = self._pending[kind]
                pending.update(dict.fromkeys(gone))
                pending.update(
                    {
                        r.subject_id: row_tag(r.id, r.version, r.updated_at, r.face_count)
                        for r in mine
                    }
                )

    # ----- enrolment ------------------------------------------------------------------------

    def enrol(
        self,
        subject: int | str,
        source: bytes | str | os.PathLike[str],
        *,
        source_name: str | None = None,
    ) -> EnrolResult:
        """Enrol the face of one photo (the largest, or refuse several: CQAFACE_ENROL_FACES).

        Idempotent: a photo whose content was enrolled before adds nothing and reports
        ``duplicate``. Bad input never raises: the result's status says why it was refused.
        """
        return self.enrol_many([(subject, source, source_name)])[0]

    def enrol_many(
        self, photos: list[tuple[int | str, bytes | str | os.PathLike[str], str | None]]
    ) -> list[EnrolResult]:
        """:meth:`enrol` for several (subject, source, source name) photos: one query finds
        the duplicates, their faces are embedded in one batch, and one transaction stores them
        (bulk enrolment's path)."""
        read = [self._read(*photo) for photo in photos]
        known = self._known([r.sha for r in read if isinstance(r, _Prepared)])
        prepared = [
            item
            if isinstance(item, EnrolResult)
            else _duplicate(item.name, *known[item.sha])
            if item.sha in known
            else self._detect(item)
            for item in read
        ]
        ready = [item for item in prepared if isinstance(item, _Prepared)]
        stored = iter(self.add_images(self._records(ready)) if ready else [])
        return [next(stored) if isinstance(item, _Prepared) else item for item in prepared]

    def _records(self, ready: list[_Prepared]) -> list[PhotoRecord]:
        """Embed the faces of ``ready`` photos in one batch, as records to store."""
        if self.encoder is None:
            raise RuntimeError("this gallery has no encoder: use add_images with vectors")
        faces = [face for p in ready for face in p.faces]
        encoded = self.encoder.encode(faces, settings.enrol_mask()) if faces else []
        masked_vectors = (
            list(
                self.encoder.masked_copies(
                    [e.face.crop for e in encoded], [p.sha for p in ready for _ in p.faces]
                )
            )
            if self.masked_templates and encoded
            else [None] * len(encoded)
        )
        detector = self.encoder.detector_name
        records, position = [], 0
        for item in ready:
            mine = slice(position, position + len(item.faces))
            position = mine.stop
            faces_of_item = [
                FaceRecord(
                    box=e.face.box,
                    landmarks=e.face.landmarks,
                    score=e.face.score,
                    vector=e.vector,
                    quality=e.quality,
                    masked=e.masked,
                    masked_vector=m,
                    crop_png=png_bytes(e.face.crop) if self.keep == "crops" else None,
                    detector=detector,
                )
                for e, m in zip(encoded[mine], masked_vectors[mine], strict=True)
            ]
            records.append(
                PhotoRecord(
                    item.subject,
                    sha256=item.sha,
                    size_bytes=len(item.data),
                    faces=faces_of_item,
                    source=item.name,
                    width=int(item.image.shape[1]),
                    height=int(item.image.shape[0]),
                    content=item.data if self.keep == "images" else None,
                )
            )
        return records

    def _read(
        self,
        subject: int | str,
        source: bytes | str | os.PathLike[str],
        source_name: str | None,
    ) -> _Prepared | EnrolResult:
        """Read and hash one photo (its image and faces come later), or say why not."""
        name = source_name or (str(source) if not isinstance(source, bytes) else "<bytes>")
        limit = settings.max_photo_bytes()
        try:
            size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
            if size > limit:
                return EnrolResult(
                    name, ItemStatus.TOO_LARGE, f"{size} bytes, above the limit of {limit}"
                )
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
        except OSError as error:
            return EnrolResult(name, ItemStatus.UNREADABLE, f"cannot read the file: {error}")
        return _Prepared(subject, name, data, hashlib.sha256(data).hexdigest())

    def _known(self, shas: list[str]) -> dict[str, tuple[int, int]]:
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

    def _detect(self, item: _Prepared) -> _Prepared | EnrolResult:
        """Decode and detect a read photo: its faces to embed, or why not."""
        try:
            item.image = load_image(item.data, max_bytes=settings.max_photo_bytes())
            if self.encoder is None:
                raise RuntimeError("this gallery has no encoder: use add_images with vectors")
            item.faces = self.encoder.faces(item.image, settings.enrol_policy(), gallery=True)
        except FaceInputError as error:
            return EnrolResult(item.name, status_of(error), str(error))
        return item

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
        self._sync(r.subject_id for r in results if r.status == ItemStatus.ENROLLED)
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
            else _duplicate(photo.source or photo.sha256, *stored[photo.sha256])
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

    def enrol_folder(self, root: str | os.PathLike[str]) -> Iterator[EnrolResult]:
        """Enrol ``root/<subject name>/<photo>`` for every photo, yielding one result each
        (the library call that bulk-enrolment jobs are built on). Re-running it enrols only
        what is new: the rest comes back ``duplicate``."""
        for subject_name, path in photos_by_subject(root):
            yield self.enrol(subject_name, path)

    # ----- deletion -------------------------------------------------------------------------

    def delete_subject(self, subject_id: int, *, actor: int | None = None) -> bool:
        """Delete a subject with its images, faces, embeddings and templates."""
        with self.sessions() as session, session.begin():
            subject = session.get(Subject, subject_id)
            if subject is None:
                return False
            _audit(session, actor, "delete_subject", "subject", subject_id, name=subject.name)
            session.delete(subject)
        self._sync([subject_id])
        return True

    def delete_image(self, image_id: int, *, actor: int | None = None) -> bool:
        """Delete an image with its faces and embeddings; its subject's templates are
        recomputed from what remains (or deleted when nothing does)."""
        with self.sessions() as session, session.begin():
            image = session.get(Image, image_id)
            if image is None:
                return False
            subject_id = image.subject_id
            _audit(session, actor, "delete_image", "image", image_id, subject_id=subject_id)
            session.delete(image)
            session.flush()
            subject_templates.recompute(session, subject_id)
        self._sync([subject_id])
        return True

    def delete_face(self, face_id: int, *, actor: int | None = None) -> bool:
        """Delete one face (a wrong detection) with its embeddings; templates recomputed."""
        with self.sessions() as session, session.begin():
            face = session.get(Face, face_id)
            if face is None:
                return False
            subject_id = face.image.subject_id
            _audit(session, actor, "delete_face", "face", face_id, subject_id=subject_id)
            session.delete(face)
            session.flush()
            subject_templates.recompute(session, subject_id)
        self._sync([subject_id])
        return True

    def switch(self, model_version: str, encoder: FaceEncoder | None, indexes: dict) -> None:
        """Serve another model version from now on, with its already built indexes: the swap
        at the end of a re-embedding, atomic for concurrent searches."""
        with self._sync_lock:
            self.model_version = model_version
            self.encoder = encoder
            self._indexes = dict(indexes)
            self._pending = {k: {} for k in TemplateKind}

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


def _audit(
    session: Session, actor: int | None, action: str, target: str, target_id: int, **details: Any
) -> None:
    """A row of the audit log, in the transaction of the change it records."""
    session.add(
        AuditEntry(
            user_id=actor,
            action=action,
            target_type=target,
            target_id=str(target_id),
            details=details,
        )
    )


def _difference(
    held: TemplateStates, pending: dict[int, int | None], now: TemplateStates
) -> tuple[np.ndarray, np.ndarray]:
    """(subjects to re-read, subjects to drop) to take an index from what it holds (``held``
    updated by this process's own ``pending`` syncs) to the database's ``now``."""
    position = np.clip(np.searchsorted(held.ids, now.ids), 0, max(len(held.ids) - 1, 0))
    if len(held.ids):
        same = (held.ids[position] == now.ids) & (held.tags[position] == now.tags)
    else:
        same = np.zeros(len(now.ids), bool)
    if pending:
        where = {int(s): i for i, s in enumerate(now.ids.tolist()) if int(s) in pending}
        for subject, tag in pending.items():
            if subject in where:
                same[where[subject]] = tag == int(now.tags[where[subject]])
    dropped = np.array([s for s, tag in pending.items() if tag is None], np.int64)
    added = np.array([s for s, tag in pending.items() if tag is not None], np.int64)
    holds = np.union1d(np.setdiff1d(held.ids, dropped), added)
    return now.ids[~same], np.setdiff1d(holds, now.ids)


def photos_by_subject(root: str | os.PathLike[str]) -> Iterator[tuple[str, Path]]:
    """(subject name, photo path) for `root/<subject>/<photo>`, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of subject folders")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES:
                yield folder.name, path
