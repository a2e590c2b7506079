"""Requests per API key: counted in this process's memory and added to the key's row at most
once a minute per key, and whenever keys are listed, so that a busy key costs one write a
minute rather than one per request (as its `last_used_at` does)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from sqlalchemy import update
from sqlalchemy.orm import Session

from identify.gallery.tables import ApiKey

WRITE_EVERY_S = 60.0


class KeyUsage:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Counter[int] = Counter()
        self._written: dict[int, float] = {}

    def count(self, session: Session, key_id: int) -> None:
        """One request of ``key_id``; writes its pending count when the last write is old."""
        now = time.monotonic()
        with self._lock:
            self._pending[key_id] += 1
            if now - self._written.get(key_id, -WRITE_EVERY_S) < WRITE_EVERY_S:
                return
            self._written[key_id] = now
            pending = {key_id: self._pending.pop(key_id)}
        _add(session, pending)

    def flush(self, session: Session) -> None:
        """Write every pending count (before keys are shown)."""
        with self._lock:
            pending = dict(self._pending)
            self._pending.clear()
        _add(session, pending)


def _add(session: Session, pending: dict[int, int]) -> None:
    for key_id, n in pending.items():
        # `count = count + n` in SQL: other processes' additions are kept.
        session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(request_count=ApiKey.request_count + n)
        )
