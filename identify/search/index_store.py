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

from identify.gallery import vectors as vec
from identify.gallery.tables import Template, TemplateKind
from identify.search.index import FORMAT_VERSION, IndexFileError, TemplateIndex

log = logging.getLogger(__name__)


@dataclass
class TemplateStates:
    """What the database holds for one model version and kind: the subject ids (sorted), a tag
    per subject that changes whenever its template row changes, and a checksum of it all."""

    ids: np.ndarray
    tags: np.ndarray
    checksum: str


def row_tag(template_id: int, version: int, updated_at: object, face_count: int) -> int:
    """A per-process fingerprint of one template row's state."""
    return hash((template_id, version, str(updated_at), face_count))


def template_states(session: Session, model_version: str, kind: TemplateKind) -> TemplateStates:
    """One pass over (subject id, template row, version, update time, face count): any
    enrolment or deletion changes the checksum and the tags of the subjects it touched."""
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
        .execution_options(yield_per=50_000)
    )
    ids: list[int] = []
    tags: list[int] = []
    for subject_id, template_id, version, updated_at, face_count in rows:
        digest.update(f"{subject_id}|{template_id}|{version}|{updated_at}|{face_count}\n".encode())
        ids.append(subject_id)
        tags.append(row_tag(template_id, version, updated_at, face_count))
    return TemplateStates(np.asarray(ids, np.int64), np.asarray(tags, np.int64), digest.hexdigest())


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


def index_path(model_version: str, kind: TemplateKind, directory: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_version)
    return directory / f"templates-{safe}-{kind.value}.cqaidx"


@dataclass
class OpenedIndex:
    index: TemplateIndex
    path: Path
    states: TemplateStates  # the database state the index holds (or something older)
    how: str  # "loaded", or "rebuilt (why)"

    @property
    def checksum(self) -> str:
        return self.states.checksum


def open_index(
    session: Session,
    model_version: str,
    kind: TemplateKind,
    *,
    dim: int = 512,
    directory: Path,
    **options: Any,
) -> OpenedIndex:
    """The index of one model version and kind: the file if it matches the database, else a
    fresh one built from the templates and written back."""
    path = index_path(model_version, kind, directory)
    states = template_states(session, model_version, kind)
    try:
        index = TemplateIndex.load(path, states.checksum, **options)
        return OpenedIndex(index, path, states, "loaded")
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
    directory: Path,
    **options: Any,
) -> OpenedIndex:
    """Build from the database and save. The states are read before the vectors: a write that
    slips in between makes the file look stale next time (a rebuild), never falsely current."""
    path = index_path(model_version, kind, directory)
    states = template_states(session, model_version, kind)
    ids, vectors = load_templates(session, model_version, kind)
    if len(ids):
        index = TemplateIndex.build(ids, vectors, **options)
    else:
        index = TemplateIndex(dim, **options)
    index.save(path, states.checksum)
    return OpenedIndex(index, path, states, "rebuilt")


def rebuild_indexes(
    session: Session,
    model_version: str,
    *,
    dim: int = 512,
    directory: Path,
    **options: Any,
) -> dict[TemplateKind, OpenedIndex]:
    """:func:`rebuild_index` for every template kind of ``model_version``."""
    return {
        kind: rebuild_index(session, model_version, kind, dim=dim, directory=directory, **options)
        for kind in TemplateKind
    }
