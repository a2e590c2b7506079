"""The persisted index and the database state it reflects: load when it matches, rebuild from
the database (the source of truth) when it is missing, stale or corrupt."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from identify import settings
from identify import vectors as vec
from identify.index import FORMAT_VERSION, IndexFileError, TemplateIndex
from identify.models import Template, TemplateKind

log = logging.getLogger(__name__)


def state_checksum(session: Session, model_version: str, kind: TemplateKind) -> str:
    """A digest of (subject id, template row, version, update time, face count) over the
    templates of one model version and kind: any enrolment or deletion changes it."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}|{model_version}|{kind.value}".encode())
    rows = session.execute(
        select(
            Template.subject_id,
            Template.id,
            Template.version,
            Template.updated_at,
            Template.face_count,
        )
        .where(Template.model_version == model_version, Template.kind == kind)
        .order_by(Template.subject_id)
    )
    for row in rows:
        digest.update(("|".join(str(v) for v in row) + "\n").encode())
    return digest.hexdigest()


def load_templates(
    session: Session, model_version: str, kind: TemplateKind
) -> tuple[np.ndarray, np.ndarray]:
    """(subject ids, unit template vectors) of one model version and kind, streamed."""
    query = (
        select(Template.subject_id, Template.dim, Template.vector)
        .where(Template.model_version == model_version, Template.kind == kind)
        .order_by(Template.subject_id)
        .execution_options(yield_per=10_000)
    )
    ids: list[int] = []
    rows: list[np.ndarray] = []
    for subject_id, dim, data in session.execute(query):
        ids.append(subject_id)
        rows.append(vec.from_bytes(data, dim))
    if not rows:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    return np.asarray(ids, np.int64), np.stack(rows)


def index_path(model_version: str, kind: TemplateKind, directory: Path | None = None) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_version)
    return (directory or settings.index_dir()) / f"templates-{safe}-{kind.value}.cqaidx"


@dataclass
class OpenedIndex:
    index: TemplateIndex
    path: Path
    checksum: str
    how: str  # "loaded", or "rebuilt (why)"


def open_index(
    session: Session,
    model_version: str,
    kind: TemplateKind,
    *,
    dim: int = 512,
    directory: Path | None = None,
    **options: Any,
) -> OpenedIndex:
    """The index of one model version and kind: the file if it matches the database, else a
    fresh one built from the templates and written back."""
    path = index_path(model_version, kind, directory)
    checksum = state_checksum(session, model_version, kind)
    try:
        index = TemplateIndex.load(path, checksum, **options)
        return OpenedIndex(index, path, checksum, "loaded")
    except IndexFileError as error:
        reason = str(error)
    opened = rebuild_index(session, model_version, kind, dim=dim, directory=directory, **options)
    log.info("index %s rebuilt: %s", path, reason)
    opened.how = f"rebuilt ({reason})"
    return opened


def rebuild_index(
    session: Session,
    model_version: str,
    kind: TemplateKind,
    *,
    dim: int = 512,
    directory: Path | None = None,
    **options: Any,
) -> OpenedIndex:
    """Build from the database and save. The checksum is read before the vectors: a write that
    slips in between makes the file look stale next time (a rebuild), never falsely current."""
    path = index_path(model_version, kind, directory)
    checksum = state_checksum(session, model_version, kind)
    ids, vectors = load_templates(session, model_version, kind)
    if len(ids):
        index = TemplateIndex.build(ids, vectors, **options)
    else:
        index = TemplateIndex(dim, **options)
    index.save(path, checksum)
    return OpenedIndex(index, path, checksum, "rebuilt")
