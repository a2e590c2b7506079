"""The web app's own state in one process, one typed object on the app (`web_state()`), made
once by `wiring.init_web`: request metrics, per-key use counts, live-stream slots, the rate
limiters, the database sessions and the broker's Redis client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from identify.web.job_events import StreamSlots
    from identify.web.key_usage import KeyUsage
    from identify.web.metrics import Metrics
    from identify.web.ratelimit import RateLimiter

EXTENSION = "cqaface_web"


@dataclass(frozen=True)
class WebState:
    metrics: Metrics
    key_usage: KeyUsage
    event_streams: StreamSlots
    rate_limit: RateLimiter  # API requests per key
    login_limit: RateLimiter  # sign-in attempts per address
    sessions: sessionmaker[Session]
    redis: Any | None  # the broker's Redis (queue length, health); None without one


def web_state(app: Flask | None = None) -> WebState:
    """``app``'s web state, by default the current app's (in a request or an app context)."""
    return (app or current_app).extensions[EXTENSION]
