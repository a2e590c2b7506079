"""The hygiene report's computation, from the database and the index, chunk by chunk of
subjects (identify.gallery.hygiene keeps the report's rows, its cursor and what is shown).

- Outlier faces: a face whose similarity to its own subject's template computed without it,
  (S - e) / |S - e| for the subject's running sum S, is below the same-person threshold, or
  that a k-NN search of the index finds nearer another subject's template. Only subjects with
  two or more unmasked faces are judged (one face is the whole template); masked faces feed
  the masked template and are left out.
- Likely same person: each subject's template is searched in the index for its nearest
  neighbours; a neighbour at or above the threshold makes a pair. The cost is one k-NN search
  per subject and per face, never all pairs of subjects, so the report costs n searches of
  the live index: n log n with HNSW (CQAFACE_INDEX_APPROX=hnsw); the exact index up to
  CQAFACE_INDEX_EXACT_MAX and the PQ fast scan read every template (or code) per search, which
  keeps a quadratic term with a small constant (benchmarks/hygiene_report.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identify.gallery import hygiene
from identify.gallery import vectors as vec
from identify.gallery.store import GalleryStore
from identify.gallery.tables import (
    Embedding,
    Face,
    FindingKind,
    HygieneFinding,
    Image,
    Template,
    TemplateKind,
)
from identify.search.index import TemplateIndex

FAR = 1e-3  # the same-person threshold of the report: the model's calibrated one at this FAR
NEIGHBOURS = 8  # templates searched per subject for pairs (the nearest are what matter)
CHUNK = 2_000  # subjects per committed chunk: the most a run cut short repeats


def run_report(
    store: GalleryStore,
    index: TemplateIndex,
    report_id: int,
    *,
    chunk: int = CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> bool:
    """Compute (or resume) a report over ``index``, which holds the normal templates of the
    store's model as the database does. False when the report had ended, or another run took
    it over; a failure marks the report failed and is raised."""
    with store.sessions() as session:
        total = _template_count(session, store.model_version)
    started = hygiene.start_report(store, report_id, total)
    if started is None:
        return False
    cursor, threshold = started
    seen = hygiene.found_pairs(store, report_id) | hygiene.dismissed_pairs(store)
    try:
        while True:
            with store.sessions() as session:
                ids = _next_subjects(session, store.model_version, cursor, chunk)
                if not ids:
                    break
                findings = scan(session, store.model_version, index, ids, threshold, seen)
            if not hygiene.save_chunk(
                store,
                report_id,
                cursor=cursor,
                next_cursor=ids[-1],
                scanned=len(ids),
                findings=findings,
            ):
                return False
            cursor = ids[-1]
            if on_chunk is not None:
                on_chunk(len(ids))
    except Exception as error:
        hygiene.finish_report(store, report_id, error=f"{type(error).__name__}: {error}")
        raise
    hygiene.finish_report(store, report_id)
    return True


def _template_count(session: Session, model_version: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                Template.model_version == model_version, Template.kind == TemplateKind.NORMAL
            )
        )
        or 0
    )


def _next_subjects(session: Session, model_version: str, after: int, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(Template.subject_id)
            .where(
                Template.model_version == model_version,
                Template.kind == TemplateKind.NORMAL,
                Template.subject_id > after,
            )
            .order_by(Template.subject_id)
            .limit(limit)
        )
    )


def scan(
    session: Session,
    model_version: str,
    index: TemplateIndex,
    subject_ids: list[int],
    threshold: float,
    seen: set[tuple[int, int]],
) -> list[HygieneFinding]:
    """The findings of ``subject_ids``: their outlier faces, and their pairs not in ``seen``
    (pairs found before, or dismissed), which the new pairs join."""
    return _pairs(session, model_version, index, subject_ids, threshold, seen) + _outliers(
        session, model_version, index, subject_ids, threshold
    )


def _pairs(
    session: Session,
    model_version: str,
    index: TemplateIndex,
    subject_ids: list[int],
    threshold: float,
    seen: set[tuple[int, int]],
) -> list[HygieneFinding]:
    rows = session.execute(
        select(Template.subject_id, Template.dim, Template.vector).where(
            Template.subject_id.in_(subject_ids),
            Template.model_version == model_version,
            Template.kind == TemplateKind.NORMAL,
        )
    ).all()
    if not rows:
        return []
    owners = np.array([r.subject_id for r in rows], np.int64)
    scores, ids = index.search(
        np.stack([vec.from_bytes(r.vector, r.dim) for r in rows]), NEIGHBOURS + 1
    )
    found = []
    for row, owner in enumerate(owners.tolist()):
        for other, score in zip(ids[row].tolist(), scores[row].tolist(), strict=True):
            if other < 0 or other == owner or score < threshold:
                continue
            pair = (min(owner, other), max(owner, other))
            if pair in seen:
                continue
            seen.add(pair)
            found.append(
                HygieneFinding(
                    kind=FindingKind.SAME_PERSON,
                    subject_id=pair[0],
                    other_subject_id=pair[1],
                    score=float(score),
                )
            )
    return found


def _outliers(
    session: Session,
    model_version: str,
    index: TemplateIndex,
    subject_ids: list[int],
    threshold: float,
) -> list[HygieneFinding]:
    rows = session.execute(
        select(Image.subject_id, Face.id, Embedding.dim, Embedding.vector)
        .join(Face, Embedding.face_id == Face.id)
        .join(Image, Face.image_id == Image.id)
        .where(
            Image.subject_id.in_(subject_ids),
            Embedding.model_version == model_version,
            Embedding.kind == TemplateKind.NORMAL,
            Face.masked.is_(False),
        )
        .order_by(Face.id)
    ).all()
    by_subject: dict[int, list[int]] = defaultdict(list)
    for position, row in enumerate(rows):
        by_subject[int(row.subject_id)].append(position)
    judged = [p for positions in by_subject.values() if len(positions) > 1 for p in positions]
    if not judged:
        return []
    faces = np.stack([vec.from_bytes(rows[p].vector, rows[p].dim) for p in judged])
    owners = np.array([int(rows[p].subject_id) for p in judged], np.int64)
    sums = {
        s: np.sum([vec.from_bytes(rows[p].vector, rows[p].dim) for p in ps], 0, dtype=np.float64)
        for s, ps in by_subject.items()
        if len(ps) > 1
    }
    without = np.stack([sums[int(s)] for s in owners]) - faces.astype(np.float64)
    norms = np.linalg.norm(without, axis=1)
    own = np.einsum("ij,ij->i", without, faces) / np.where(norms > 0, norms, 1.0)
    scores, ids = index.search(faces, 3)
    found = []
    for row, position in enumerate(judged):
        others = [
            (i, s)
            for i, s in zip(ids[row], scores[row], strict=True)
            if i >= 0 and i != owners[row]
        ]
        other, other_score = (int(others[0][0]), float(others[0][1])) if others else (None, None)
        nearer = other_score is not None and other_score > own[row]
        if own[row] >= threshold and not nearer:
            continue
        found.append(
            HygieneFinding(
                kind=FindingKind.OUTLIER,
                subject_id=int(owners[row]),
                face_id=int(rows[position].id),
                score=float(own[row]),
                other_subject_id=other,
                other_score=other_score,
            )
        )
    return found
