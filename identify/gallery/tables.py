"""The gallery's tables (SQLAlchemy 2.0 typed mappings): the database is the source of truth.

subject 1-n image 1-n face 1-n embedding (one per model version and kind); templates per subject,
model version and kind; enrolment jobs and their items; users, API keys and the audit log.
Deleting a subject or an image cascades down to its embeddings in the database itself
(ON DELETE CASCADE), so nothing is left orphaned whichever client deletes.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from identify.gallery import vectors as vec

# Deterministic constraint names: migrations can drop and alter them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type[enum.Enum], name: str, length: int = 32) -> Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL type: adding a value is a plain migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [m.value for m in members],
    )


class ImageStatus(enum.StrEnum):
    PENDING = "pending"
    ENROLLED = "enrolled"


class TemplateKind(enum.StrEnum):
    NORMAL = "normal"  # mean of the subject's unmasked face embeddings
    MASKED = "masked"  # mean of embeddings of synthetic-masked copies (and real masked faces)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(enum.StrEnum):
    FOLDER = "folder"  # a server-side folder of subject folders
    ZIP = "zip"  # an uploaded archive, extracted for the job's duration
    FILES = "files"  # a list of (subject, photo) pairs


class ItemStatus(enum.StrEnum):
    """What became of one photo, in one vocabulary: a job item's status, the reason a photo
    input error (embedder.errors codes) stands for, the CLI's verdict and the API's answer."""

    PENDING = "pending"
    ENROLLED = "enrolled"
    DUPLICATE = "duplicate"
    NO_FACE = "no_face"
    LOW_QUALITY = "low_quality"  # a face under the minimum quality to enrol
    SEVERAL_FACES = "several_faces"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    FAILED = "failed"

    @classmethod
    def of_code(cls, code: str) -> ItemStatus:
        """The status of a photo refused with a FaceInputError of ``code``."""
        return _STATUS_OF_CODE.get(code, cls.FAILED)

    @property
    def stored(self) -> bool:
        """The photo is in the gallery, enrolled now or before (the CLI exits 0)."""
        return self in (ItemStatus.ENROLLED, ItemStatus.DUPLICATE)

    @property
    def http(self) -> tuple[int, str]:
        """(HTTP status, error code) of the API's answer for a single photo not enrolled."""
        return _HTTP_OF_STATUS.get(self, (422, "failed"))


_STATUS_OF_CODE = {
    "empty_file": ItemStatus.UNREADABLE,
    "not_an_image": ItemStatus.UNREADABLE,
    "unreadable_image": ItemStatus.UNREADABLE,
    "image_too_large": ItemStatus.TOO_LARGE,
    "no_face": ItemStatus.NO_FACE,
    "face_too_small": ItemStatus.NO_FACE,
    "several_faces": ItemStatus.SEVERAL_FACES,
}
_HTTP_OF_STATUS = {
    ItemStatus.DUPLICATE: (409, "duplicate"),
    ItemStatus.NO_FACE: (422, "no_face"),
    ItemStatus.LOW_QUALITY: (422, "low_quality"),
    ItemStatus.SEVERAL_FACES: (422, "several_faces"),
    ItemStatus.UNREADABLE: (415, "not_an_image"),
    ItemStatus.TOO_LARGE: (413, "image_too_large"),
    ItemStatus.FAILED: (422, "failed"),
}


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything, users and API keys included
    OPERATOR = "operator"  # enrol and manage subjects, search
    ANALYST = "analyst"  # search only


class Subject(Base):
    """An identity of the gallery; its id is the FAISS id of its templates."""

    __tablename__ = "subjects"
    # Ids are FAISS ids and audit targets: SQLite must never hand a deleted one out again.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    images: Mapped[list[Image]] = relationship(
        back_populates="subject", cascade="all, delete-orphan", passive_deletes=True
    )
    templates: Mapped[list[Template]] = relationship(
        back_populates="subject", cascade="all, delete-orphan", passive_deletes=True
    )


class Image(Base):
    """An enrolled photo; its content hash makes enrolment idempotent."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str | None] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[ImageStatus] = mapped_column(
        _enum(ImageStatus, "image_status"), default=ImageStatus.ENROLLED
    )
    # The original bytes, kept only under CQAFACE_KEEP=images (for re-embedding).
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    subject: Mapped[Subject] = relationship(back_populates="images")
    faces: Mapped[list[Face]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )


class Face(Base):
    """One detected, aligned face of an image."""

    __tablename__ = "faces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    box: Mapped[list[float]] = mapped_column(JSON)  # x1, y1, x2, y2 in photo pixels
    landmarks: Mapped[list[list[float]]] = mapped_column(JSON)  # 5 x (x, y) photo pixels
    detection_score: Mapped[float] = mapped_column(Float)
    # The detector that found and aligned the face (`mtcnn`, `scrfd`): its crops are what the
    # embedding saw, so a change of detector shows here and a re-embed can follow.
    detector: Mapped[str | None] = mapped_column(String(16))
    masked: Mapped[bool] = mapped_column(Boolean, default=False)
    part_qualities: Mapped[list[float]] = mapped_column(JSON, default=list)
    # The face's quality in [0, 1] (embedder.quality); NULL for faces stored before it existed
    # until a re-embed scores them.
    quality: Mapped[float | None] = mapped_column(Float)
    # The aligned 112x112 crop as PNG, kept under CQAFACE_KEEP=crops (for re-embedding).
    crop_png: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    image: Mapped[Image] = relationship(back_populates="faces")
    embeddings: Mapped[list[Embedding]] = relationship(
        back_populates="face", cascade="all, delete-orphan", passive_deletes=True
    )


class Embedding(Base):
    """A face's embedding by one model version; `kind` masked is of a synthetic-masked copy."""

    __tablename__ = "embeddings"
    __table_args__ = (
        UniqueConstraint("face_id", "model_version", "kind", name="uq_embeddings_face_model_kind"),
        Index("ix_embeddings_model_version_kind", "model_version", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(64))
    kind: Mapped[TemplateKind] = mapped_column(
        _enum(TemplateKind, "embedding_kind"), default=TemplateKind.NORMAL
    )
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32 little-endian, unit length
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    face: Mapped[Face] = relationship(back_populates="embeddings")

    @classmethod
    def of(cls, unit: np.ndarray, *, model_version: str, kind: TemplateKind) -> Embedding:
        """The row of a unit vector (normalised by the caller, which may need it for templates;
        its face is set by the caller too)."""
        return cls(model_version=model_version, kind=kind, dim=len(unit), vector=vec.to_bytes(unit))


class Template(Base):
    """A subject's template for one model version: the normalised mean of its embeddings.

    `total` keeps the running float64 sum so that enrolment updates it in O(1); `version`
    counts updates and enters the checksum that ties a persisted index to the database.
    """

    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint(
            "subject_id", "model_version", "kind", name="uq_templates_subject_model_kind"
        ),
        Index("ix_templates_model_version_kind", "model_version", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(64))
    kind: Mapped[TemplateKind] = mapped_column(
        _enum(TemplateKind, "template_kind"), default=TemplateKind.NORMAL
    )
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    total: Mapped[bytes] = mapped_column(LargeBinary)  # float64 running sum of embeddings
    face_count: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    subject: Mapped[Subject] = relationship(back_populates="templates")


class EnrolmentJob(Base):
    """A bulk enrolment: watched through its items' statuses, resumable after a crash."""

    __tablename__ = "enrolment_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[JobKind] = mapped_column(
        _enum(JobKind, "job_kind", length=16), default=JobKind.FOLDER, server_default="folder"
    )
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.QUEUED, index=True
    )
    # e.g. {"work_dir": ...}: an extracted upload, removed when the job ends.
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    task_id: Mapped[str | None] = mapped_column(String(255))  # the Celery task that runs it
    total_items: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    items: Mapped[list[JobItem]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


JOB_PATH_LENGTH = 1024


class JobItem(Base):
    """One photo of a job and what happened to it (a stable status and a human reason)."""

    __tablename__ = "job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "path", name="uq_job_items_job_path"),
        Index("ix_job_items_job_id_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("enrolment_jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(JOB_PATH_LENGTH))
    subject_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[ItemStatus] = mapped_column(
        _enum(ItemStatus, "item_status"), default=ItemStatus.PENDING
    )
    reason: Mapped[str | None] = mapped_column(Text)
    subject_id: Mapped[int | None] = mapped_column(
        ForeignKey("subjects.id", ondelete="SET NULL"), index=True
    )
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    job: Mapped[EnrolmentJob] = relationship(back_populates="items")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"), default=Role.ANALYST)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A one-time link to set the password (an invitation or a reset): the SHA-256 of its token.
    password_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    password_token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiKey(Base):
    """An API key, stored as a hash: `prefix` finds the row, the hash checks the secret."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(String(255), default="", server_default="")  # a,b,c
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    request_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    user: Mapped[User] = relationship(back_populates="api_keys")


class AuditEntry(Base):
    """Who did what to which record, kept after the record and the user are gone."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FindingKind(enum.StrEnum):
    OUTLIER = "outlier"  # a face far from its own subject, or nearer another one
    SAME_PERSON = "same_person"  # two subjects whose templates are closer than the threshold


class HygieneReport(Base):
    """A hygiene report of one model version's gallery, computed as a job: ``cursor`` is the
    last subject id scanned, committed with that chunk's findings, so a run cut short resumes
    where it stopped."""

    __tablename__ = "hygiene_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "hygiene_report_status"), default=JobStatus.QUEUED, index=True
    )
    threshold: Mapped[float] = mapped_column(Float)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    findings: Mapped[list[HygieneFinding]] = relationship(
        back_populates="report", cascade="all, delete-orphan", passive_deletes=True
    )


class HygieneFinding(Base):
    """One finding of a report. Subject and face ids are plain numbers, not foreign keys: a
    finding outlives the rows it names (a merge deletes a subject), and is shown only while
    they still stand as found."""

    __tablename__ = "hygiene_findings"
    __table_args__ = (Index("ix_hygiene_findings_report_kind", "report_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("hygiene_reports.id", ondelete="CASCADE"))
    kind: Mapped[FindingKind] = mapped_column(_enum(FindingKind, "finding_kind", length=16))
    subject_id: Mapped[int] = mapped_column(Integer)
    other_subject_id: Mapped[int | None] = mapped_column(Integer)
    face_id: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)  # outlier: to its own subject; pair: templates
    other_score: Mapped[float | None] = mapped_column(Float)  # outlier: to the other subject

    report: Mapped[HygieneReport] = relationship(back_populates="findings")


class HygieneDismissal(Base):
    """A pair of subjects an operator said are two people: never listed as one again."""

    __tablename__ = "hygiene_dismissals"
    __table_args__ = (
        UniqueConstraint("subject_a", "subject_b", name="uq_hygiene_dismissals_pair"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_a: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    subject_b: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HygieneMerge(Base):
    """A merge of subject ``source_id`` into ``target_id``: what undoing it needs (the source's
    row and the images moved) and ``target_state``, a digest of the target's faces right
    after the merge, which must still hold for the undo to be allowed."""

    __tablename__ = "hygiene_merges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(Integer, index=True)
    target_id: Mapped[int] = mapped_column(Integer, index=True)
    source_name: Mapped[str] = mapped_column(String(255))
    source_external_id: Mapped[str | None] = mapped_column(String(255))
    source_details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    image_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    target_state: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    undone_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
