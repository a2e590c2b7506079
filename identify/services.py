"""The long-lived parts of a process (engine, encoder, gallery, searcher), built once on first
use and shared by the web app's requests and a worker's tasks: loading the model and opening
the index are costly, and every request of a process must see the same index. The factory
hangs them on the app; blueprints and tasks find them with `services()`, never through the
factory's module."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import Engine

from identify.gallery.db import make_engine

if TYPE_CHECKING:
    from identify.gallery.enrolment import Gallery
    from identify.search.searcher import Searcher


class Services:
    """Lazy, thread-safe holders; ``model_path`` None means the configured default model."""

    def __init__(self, *, database_url: str, index_dir: Path, model_path: Path | None) -> None:
        self.database_url = database_url
        self.index_dir = index_dir
        self.model_path = model_path
        self._lock = threading.RLock()
        self._engine: Engine | None = None
        self._gallery: Gallery | None = None
        self._searcher: Searcher | None = None

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.database_url)
            return self._engine

    @property
    def gallery(self) -> Gallery:
        """The gallery of the current model, with its indexes opened."""
        with self._lock:
            if self._gallery is None:
                from identify.gallery.enrolment import Gallery
                from identify.search.encode import FaceEncoder

                encoder = FaceEncoder.load(self.model_path)
                gallery = Gallery.for_encoder(self.engine, encoder, index_dir=self.index_dir)
                gallery.open_indexes()
                self._gallery = gallery
            return self._gallery

    @property
    def searcher(self) -> Searcher:
        with self._lock:
            if self._searcher is None:
                from identify.search.searcher import Searcher

                self._searcher = Searcher(self.gallery)
            return self._searcher

    def close(self) -> None:
        """Persist the indexes and release the database connections."""
        with self._lock:
            if self._gallery is not None:
                self._gallery.save_indexes()
            if self._engine is not None:
                self._engine.dispose()


def services() -> Services:
    """The current app's services (inside a request, a CLI command or a worker's task)."""
    return current_app.extensions["cqaface"]
