"""`cqaface reembed`: embed every stored face with a new model, then build its templates (its
indexes are built from them by the caller, identify.services); the model in service keeps its
own until the new ones are complete.

Faces are re-embedded from their kept aligned crop (CQAFACE_KEEP=crops) or re-aligned from the
kept original photo with the stored landmarks (CQAFACE_KEEP=images); faces with neither are
counted as skipped. Work is committed per batch and resumes where it stopped. A face stored
before faces had a quality (migration 0007) gets its quality here, when the new model
has a quality fit (embedder.quality).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import Engine, exists, select
from sqlalchemy.orm import Session, undefer

from embedder.mtcnn import Detection
from embedder.quality import box_size, face_quality
from identify.gallery import subject_templates
from identify.gallery import vectors as vec
from identify.gallery.db import session_factory
from identify.gallery.tables import Embedding, Face, Image, TemplateKind
from identify.settings import Settings

if TYPE_CHECKING:
    from identify.search.encode import FaceEncoder


@dataclass
class ReembedReport:
    model_version: str
    embedded: int = 0
    skipped: list[int] = field(default_factory=list)  # face ids with no crop and no photo
    subjects: int = 0
    seconds: float = 0.0
    indexes: dict[TemplateKind, Path] = field(default_factory=dict)  # the files, once built

    def to_json(self) -> dict[str, object]:
        return {
            "model_version": self.model_version,
            "embedded": self.embedded,
            "skipped": len(self.skipped),
            "subjects": self.subjects,
            "seconds": round(self.seconds, 2),
            "indexes": {k.value: str(path) for k, path in self.indexes.items()},
        }


def reembed(
    engine: Engine,
    encoder: FaceEncoder,
    *,
    batch_size: int = 64,
    masked_templates: bool = Settings.masked_templates,
    progress: Callable[[int], None] | None = None,
) -> ReembedReport:
    """Embed every face that lacks an embedding by ``encoder``'s model and recompute that
    model's templates."""
    started = time.perf_counter()
    version = encoder.model_version
    masked = masked_templates
    sessions = session_factory(engine)
    report = ReembedReport(version)
    last_id = 0
    while True:
        with sessions() as session, session.begin():
            batch = _pending_faces(session, version, last_id, batch_size)
            if not batch:
                break
            last_id = batch[-1][0].id
            report.embedded += _embed_batch(session, encoder, batch, masked, report.skipped)
        if progress:
            progress(len(batch))
    with sessions() as session:
        subject_ids = session.scalars(
            select(Image.subject_id).join(Face).distinct().order_by(Image.subject_id)
        ).all()
    for start in range(0, len(subject_ids), 500):
        with sessions() as session, session.begin():
            subject_templates.recompute(session, subject_ids[start : start + 500], version)
    report.subjects = len(subject_ids)
    report.seconds = time.perf_counter() - started
    return report


def _pending_faces(
    session: Session, version: str, after: int, limit: int
) -> list[tuple[Face, str]]:
    done = exists().where(
        Embedding.face_id == Face.id,
        Embedding.model_version == version,
        Embedding.kind == TemplateKind.NORMAL,
    )
    query = (
        select(Face, Image.sha256)
        .join(Image)
        .where(Face.id > after, ~done)
        .options(undefer(Face.crop_png))
        .order_by(Face.id)
        .limit(limit)
    )
    return [(face, sha) for face, sha in session.execute(query)]


def _embed_batch(
    session: Session,
    encoder: FaceEncoder,
    batch: list[tuple[Face, str]],
    masked: bool,
    skipped: list[int],
) -> int:
    crops, faces, seeds = [], [], []
    for face, sha in batch:
        crop = _crop(session, face, encoder)
        if crop is None:
            skipped.append(face.id)
            continue
        crops.append(crop)
        faces.append(face)
        seeds.append(sha)
    if not crops:
        return 0
    result = encoder.embedder.embed(crops)
    masked_vectors = encoder.masked_copies(crops, seeds) if masked else [None] * len(crops)
    agreement = [None] * len(crops) if result.agreement is None else result.agreement
    fit = encoder.quality_fit
    for face, crop, parts, flip in zip(faces, crops, result.quality, agreement, strict=True):
        if face.quality is None:  # stored before faces had a quality
            size = box_size(face.box)
            face.quality = face_quality(fit, parts, flip, face.detection_score, size, crop)
    for face, n, m in zip(faces, result.vectors, masked_vectors, strict=True):
        for kind, vector in ((TemplateKind.NORMAL, n), (TemplateKind.MASKED, m)):
            if vector is None:
                continue
            unit = vec.normalise(np.asarray(vector, np.float32))
            row = Embedding.of(unit, model_version=encoder.model_version, kind=kind)
            row.face_id = face.id
            session.add(row)
    return len(faces)


def _crop(session: Session, face: Face, encoder: FaceEncoder) -> np.ndarray | None:
    """The face's aligned crop: kept PNG, else re-aligned from the kept photo, decoded as
    enrolment decoded it."""
    if face.crop_png:
        return np.asarray(PILImage.open(io.BytesIO(face.crop_png)).convert("RGB"))
    content = session.scalars(select(Image.content).where(Image.id == face.image_id)).one_or_none()
    if not content:
        return None
    box = (face.box[0], face.box[1], face.box[2], face.box[3])
    found = Detection(box, face.detection_score, np.asarray(face.landmarks, np.float32))
    return encoder.realign(content, found).crop
