"""Templates: per subject, model version and kind, the normalised mean of the embeddings that
contribute to it. Updated in O(1) from a running sum on enrolment, recomputed from the embedding
rows on deletion, always in the caller's transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from identify.gallery import vectors as vec
from identify.gallery.tables import Embedding, Face, Image, Template, TemplateKind, utcnow


def contributes_to(face_masked: bool, embedding_kind: TemplateKind) -> TemplateKind:
    """Which template an embedding feeds: a synthetic-masked copy or a really masked face
    feeds the masked template; only unmasked faces make the normal one."""
    if embedding_kind == TemplateKind.MASKED or face_masked:
        return TemplateKind.MASKED
    return TemplateKind.NORMAL


def add_vectors(
    session: Session,
    model_version: str,
    contributions: dict[tuple[int, TemplateKind], list[np.ndarray]],
) -> None:
    """Add unit vectors to templates, (subject id, kind) -> vectors: running sum += their
    sum, count += their number. One query locks the templates that exist, in id order."""
    if not contributions:
        return
    subject_ids = sorted({subject_id for subject_id, _ in contributions})
    held = {
        (t.subject_id, t.kind): t
        for t in session.scalars(
            select(Template)
            .where(Template.subject_id.in_(subject_ids), Template.model_version == model_version)
            .order_by(Template.id)
            .with_for_update()
        )
    }
    for (subject_id, kind), vectors in contributions.items():
        stacked = np.asarray(vectors, np.float64).reshape(len(vectors), -1)
        template = held.get((subject_id, kind))
        if template is None:
            template = _new(session, subject_id, model_version, kind, stacked.shape[1])
            total = stacked.sum(0)
        else:
            total = vec.from_bytes(template.total, template.dim, vec.SUM_DTYPE) + stacked.sum(0)
        _set(template, total, template.face_count + len(stacked))


def _new(
    session: Session, subject_id: int, model_version: str, kind: TemplateKind, dim: int
) -> Template:
    template = Template(
        subject_id=subject_id,
        model_version=model_version,
        kind=kind,
        dim=dim,
        face_count=0,
        version=0,
    )
    session.add(template)
    return template


def _set(template: Template, total: np.ndarray, count: int) -> None:
    template.total = vec.to_bytes(total, vec.SUM_DTYPE)
    template.vector = vec.to_bytes(vec.normalise(total.astype(np.float32)))
    template.face_count = count
    template.version = (template.version or 0) + 1
    template.updated_at = utcnow()


def recompute(
    session: Session, subject_ids: int | Iterable[int], model_version: str | None = None
) -> None:
    """Rebuild the templates of one or many subjects (one model version, or all) from their
    embedding rows, two queries for the lot; a template left with no embedding is deleted."""
    ids = [subject_ids] if isinstance(subject_ids, int) else list(subject_ids)
    if not ids:
        return
    query = (
        select(
            Image.subject_id,
            Embedding.model_version,
            Embedding.kind,
            Embedding.dim,
            Embedding.vector,
            Face.masked,
        )
        .join(Face, Embedding.face_id == Face.id)
        .join(Image, Face.image_id == Image.id)
        .where(Image.subject_id.in_(ids))
    )
    existing = select(Template).where(Template.subject_id.in_(ids))
    if model_version is not None:
        query = query.where(Embedding.model_version == model_version)
        existing = existing.where(Template.model_version == model_version)
    sums: dict[tuple[int, str, TemplateKind], list[np.ndarray]] = defaultdict(list)
    for subject_id, version, kind, dim, data, masked in session.execute(query):
        key = (subject_id, version, contributes_to(masked, kind))
        sums[key].append(vec.from_bytes(data, dim))
    templates = {
        (t.subject_id, t.model_version, t.kind): t
        for t in session.scalars(existing.order_by(Template.id).with_for_update())
    }
    for key, template in templates.items():
        if key not in sums:
            session.delete(template)
    for (subject_id, version, kind), rows in sums.items():
        template = templates.get((subject_id, version, kind))
        stacked = np.asarray(rows, np.float64)
        if template is None:
            template = _new(session, subject_id, version, kind, stacked.shape[1])
        _set(template, stacked.sum(0), len(rows))
