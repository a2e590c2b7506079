"""A running enrolment job's progress as server-sent events: the page gets each change as it
lands instead of asking every second. Each stream holds one request thread, so a process
serves a few at once (CQAFACE_EVENT_STREAMS) and answers 503 beyond them: the page then polls.
A stream ends when its job ends, after CQAFACE_EVENT_STREAM_S (the browser reconnects, through
the sign-in check again), or when the tab is closed: the next write fails and the generator is
closed, which frees its slot."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, stream_with_context

from identify.services import services
from identify.web.http_errors import ApiError
from identify.web.state import web_state

TICK_S = 1.0  # how often the job is read; a line is written each time, a change or a comment
RETRY_MS = 3000  # how long the browser waits before reconnecting
ACTIVE = ("queued", "running")


class StreamSlots:
    """How many event streams are open in this process, within a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """``action``, run by the first call only (a stream's slot is given back once)."""
    lock = threading.Lock()
    pending = [action]

    def run() -> None:
        with lock:
            todo = pending.pop() if pending else None
        if todo is not None:
            todo()

    return run


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream(job_id: int, report: Callable[[int], dict[str, Any]]) -> Response:
    """The response streaming ``report(job_id)`` as `progress` events until the job ends (an
    `end` event), 404 for no such job and 503 when every slot is taken."""
    first = report(job_id)  # 404 before a slot is taken
    slots = web_state().event_streams
    if not slots.take():
        raise ApiError(
            503,
            "busy",
            "too many live progress streams: the page polls instead",
            headers={"Retry-After": "10"},
        )
    lifetime = services().settings.event_stream_seconds
    release = _once(slots.give_back)

    def lines() -> Iterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            yield from _follow(job_id, first, report, time.monotonic() + lifetime)
        finally:
            release()

    response = Response(stream_with_context(lines()), mimetype="text/event-stream")
    response.call_on_close(release)  # also when the body is never read (HEAD, a failed send)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy passes each event on at once
    return response


def _follow(
    job_id: int,
    last: dict[str, Any],
    report: Callable[[int], dict[str, Any]],
    deadline: float,
) -> Iterator[str]:
    yield event("progress", last)
    while last["status"] in ACTIVE and time.monotonic() < deadline:
        time.sleep(TICK_S)
        current = report(job_id)
        yield event("progress", current) if current != last else ": waiting\n\n"
        last = current
    if last["status"] not in ACTIVE:
        yield event("end", {"status": last["status"]})
