"""The live index of a searching process: one index per template kind of a model version,
opened from its file (or rebuilt from the database when the file is stale), kept in step with
the committed templates.

A write of this process syncs the subjects it touched right after its commit (the store's
``on_commit``); writes of other processes (workers) are applied by :meth:`LiveIndex.refresh`,
one pass over the template rows. Both happen under one lock, so that concurrent writers leave
the index as the database says whatever order they finish in. A crash between a commit and
its sync leaves a stale index file, which the next open detects (checksum) and rebuilds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from identify.gallery import vectors as vec
from identify.gallery.db import session_factory
from identify.gallery.tables import Template, TemplateKind
from identify.search.index import TemplateIndex
from identify.search.index_store import (
    OpenedIndex,
    TemplateStates,
    open_index,
    row_tag,
    template_states,
)

REFRESH_EVERY_S = 1.0  # how stale a search may find the index: workers' writes show this late


class LiveIndex:
    """The indexes of ``model_version``'s templates, in memory, following the database."""

    def __init__(
        self,
        engine: Engine,
        *,
        model_version: str,
        dim: int = 512,
        index_dir: Path,
        index_options: dict[str, Any] | None = None,
        refresh_every_s: float = REFRESH_EVERY_S,
    ) -> None:
        self.sessions = session_factory(engine)
        self.model_version = model_version
        self.dim = dim
        self.index_dir = index_dir
        self.index_options = dict(index_options or {})
        self.refresh_every_s = refresh_every_s
        self._sync_lock = threading.Lock()
        self._indexes: dict[TemplateKind, OpenedIndex] = {}
        # Tags of the templates this process synced since the last refresh (None: removed).
        self._pending: dict[TemplateKind, dict[int, int | None]] = {k: {} for k in TemplateKind}
        self._refreshed_at = time.monotonic()

    @property
    def is_open(self) -> bool:
        return bool(self._indexes)

    def index(self, kind: TemplateKind = TemplateKind.NORMAL) -> TemplateIndex:
        """The index of ``kind`` templates, opened (loaded or rebuilt) on first use."""
        return self.open()[kind].index

    def open(self) -> dict[TemplateKind, OpenedIndex]:
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

    def save(self) -> list[Path]:
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

    def catch_up(self) -> None:
        """:meth:`refresh`, when the last one is older than ``refresh_every_s``: a search sees
        the workers' writes that late at most, without a pass over the templates each time."""
        if time.monotonic() - self._refreshed_at < self.refresh_every_s:
            return
        with self._sync_lock:
            if time.monotonic() - self._refreshed_at >= self.refresh_every_s:
                self._refresh_locked()

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
        self._refreshed_at = time.monotonic()
        return changed_total

    def sync(self, subject_ids: Iterable[int]) -> None:
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
