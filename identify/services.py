"""One process's gallery, built here and nowhere else: the engine, the encoder, the store, the
live index, the enroller and the searcher, each made once on first use and shared by the web
app's requests, a worker's tasks and a CLI command. Loading the model and opening the index are
costly, and every request of a process must see the same index. A worker enrols and never
searches, so it never opens the index: a million templates held in every worker process would
be gigabytes each. The factory hangs the services on the app; blueprints and tasks find them
with `services()`, never through the factory's module."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import Engine

from identify.gallery.db import make_engine
from identify.settings import Settings

if TYPE_CHECKING:
    from identify.gallery.enroller import Enroller
    from identify.gallery.reembed import ReembedReport
    from identify.gallery.store import GalleryStore
    from identify.gallery.tables import TemplateKind
    from identify.search.encode import FaceEncoder
    from identify.search.index_store import OpenedIndex
    from identify.search.live_index import LiveIndex
    from identify.search.searcher import Searcher


class Services:
    """Lazy, thread-safe holders, built of the process's ``settings`` (read once when it
    started); ``model_path`` None means the configured default model. ``submit`` hands an
    enrolment job to whoever runs jobs (the app factory wires the workers' in), so that the
    web never imports the workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        model_path: Path | None = None,
        submit: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = settings.database_url
        self.index_dir = settings.index_dir  # DATA_DIR/index unless set
        self.model_path = model_path
        self._submit = submit
        self._lock = threading.RLock()
        self._engine: Engine | None = None
        self._encoder: FaceEncoder | None = None
        self._store: GalleryStore | None = None
        self._index: LiveIndex | None = None
        self._enroller: Enroller | None = None
        self._searcher: Searcher | None = None

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.database_url)
            return self._engine

    @property
    def encoder(self) -> FaceEncoder:
        with self._lock:
            if self._encoder is None:
                from identify.search.encode import FaceEncoder

                self._encoder = FaceEncoder.load(self.model_path, self.settings)
            return self._encoder

    @property
    def model_version(self) -> str:
        return self.encoder.model_version

    @property
    def store(self) -> GalleryStore:
        """The gallery's rows for the served model."""
        with self._lock:
            if self._store is None:
                from identify.gallery.store import GalleryStore

                dim = int(self.encoder.embedder.config.embedding_size)
                self._store = GalleryStore(self.engine, model_version=self.model_version, dim=dim)
            return self._store

    @property
    def index(self) -> LiveIndex:
        """The live index, following this process's writes from now on; it opens (loads its
        files, or rebuilds them) on its first search."""
        with self._lock:
            if self._index is None:
                live = self._live_index()
                self.store.on_commit.append(live.sync)
                self._index = live
            return self._index

    @property
    def opened_index(self) -> LiveIndex | None:
        """The live index when it is open (it has served a search), else None."""
        with self._lock:
            live = self._index
        return live if live is not None and live.is_open else None

    def _live_index(self) -> LiveIndex:
        from identify.search.live_index import LiveIndex

        store = self.store
        return LiveIndex(
            self.engine,
            model_version=store.model_version,
            dim=store.dim,
            index_dir=self.index_dir,
            index_options=self.settings.index_options(),
        )

    @property
    def enroller(self) -> Enroller:
        with self._lock:
            if self._enroller is None:
                from identify.gallery.enroller import Enroller

                self._enroller = Enroller(self.store, self.encoder, settings=self.settings)
            return self._enroller

    @property
    def searcher(self) -> Searcher:
        with self._lock:
            if self._searcher is None:
                from identify.search.searcher import Searcher

                self._searcher = Searcher.for_encoder(
                    self.encoder, self.index, self.store, self.settings
                )
            return self._searcher

    def hygiene_threshold(self) -> float:
        """The hygiene report's same-person threshold: the served model's at FAR 1e-3 (or the
        operator's CQAFACE_THRESHOLD override)."""
        from identify.search.hygiene_report import FAR
        from identify.search.thresholds import threshold

        metadata = dict(self.encoder.embedder.metadata or {})
        return threshold(metadata, masked=False, far=FAR, settings=self.settings)

    def run_hygiene_report(self, report_id: int) -> bool:
        """Compute (or resume) a hygiene report over this process's live index, brought up to
        the database first."""
        from identify.gallery.tables import TemplateKind
        from identify.search.hygiene_report import run_report

        live = self.index
        live.open()
        live.refresh()
        return run_report(self.store, live.index(TemplateKind.NORMAL), report_id)

    def submit(self, job_id: int) -> None:
        """Start an enrolment job made in the database."""
        if self._submit is None:
            raise RuntimeError("these services run no jobs: built without `submit`")
        self._submit(job_id)

    def save_indexes(self) -> None:
        """Bring the index files up to the database. A process that searches saves its own
        index; one that does not (a worker) opens the files, which rebuilds a stale one from
        the database and writes it back, and lets the memory go with it."""
        with self._lock:
            live = self._index
        if live is not None:
            live.save()
        else:
            self._live_index().open()

    def rebuild_indexes(self) -> dict[TemplateKind, OpenedIndex]:
        """Rebuild the served model's index files from the database (OpenedIndex by kind)."""
        from identify.search.index_store import rebuild_indexes

        store = self.store
        with store.sessions() as session:
            return rebuild_indexes(
                session,
                store.model_version,
                dim=store.dim,
                directory=self.index_dir,
                **self.settings.index_options(),
            )

    def reembed(self, batch_size: int = 64) -> ReembedReport:
        """Embed every stored face with the served model (resumable), then build its index
        files; the report names them."""
        from identify.gallery.reembed import reembed

        masked = self.settings.masked_templates
        report = reembed(self.engine, self.encoder, batch_size=batch_size, masked_templates=masked)
        report.indexes = {kind: opened.path for kind, opened in self.rebuild_indexes().items()}
        return report

    def close(self) -> None:
        """Persist the open index and release the database connections."""
        with self._lock:
            if self._index is not None:
                self._index.save()
            if self._engine is not None:
                self._engine.dispose()


def services() -> Services:
    """The current app's services (inside a request, a CLI command or a worker's task)."""
    return current_app.extensions["cqaface"]
