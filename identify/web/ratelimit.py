"""Requests per minute per API key: a fixed one-minute window, counted in Redis when one is
configured (shared by every server process) and in memory otherwise."""

from __future__ import annotations

import threading
import time
from typing import Any

from identify.settings import Settings


class RateLimiter:
    """``prefix`` (CQAFACE_QUEUE) keeps deployments sharing a Redis server apart."""

    def __init__(
        self, per_minute: int, redis_url: str | None = None, prefix: str = Settings.queue
    ) -> None:
        self.per_minute = per_minute
        self.prefix = prefix
        self._redis: Any = None
        if redis_url and redis_url.startswith(("redis://", "rediss://")) and per_minute > 0:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=2)
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def hit(self, key: str) -> int | None:
        """Count one request of ``key``; None if allowed, else the seconds to wait."""
        if self.per_minute <= 0:
            return None
        now = time.time()
        window = int(now // 60)
        retry = max(1, 60 - int(now % 60))
        if self._redis is not None:
            name = f"{self.prefix}:ratelimit:{key}:{window}"  # per deployment
            try:
                pipe = self._redis.pipeline()
                pipe.incr(name)
                pipe.expire(name, 120)
                count = int(pipe.execute()[0])
            except Exception:  # Redis down: fall back to this process's count
                count = self._local(key, window)
        else:
            count = self._local(key, window)
        return retry if count > self.per_minute else None

    def _local(self, key: str, window: int) -> int:
        with self._lock:
            if len(self._counts) > 10_000:
                self._counts = {k: v for k, v in self._counts.items() if k[1] == window}
            count = self._counts.get((key, window), 0) + 1
            self._counts[(key, window)] = count
            return count
