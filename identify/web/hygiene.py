"""Gallery hygiene for the JSON API and the admin UI: reports run in a thread of the serving
process, which holds the live index the report searches; the actions of
identify.gallery.hygiene, their refusals as HTTP errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

from identify.gallery import hygiene
from identify.search.thresholds import ThresholdError
from identify.services import services
from identify.web.http_errors import ApiError

log = logging.getLogger(__name__)
_threads: dict[int, threading.Thread] = {}
_start_lock = threading.Lock()

ACTIONS: dict[str, Callable[..., hygiene.Outcome]] = {
    "move_face": hygiene.move_face,
    "remove_face": hygiene.remove_face,
    "merge": hygiene.merge,
    "undo_merge": hygiene.undo_merge,
    "dismiss": hygiene.dismiss,
}


def start_report(actor: int | None) -> int:
    """Run a report in the background: the one left unfinished (a process stopped in the
    middle) resumes, unless this process runs it already; else a new one. Its id."""
    held = services()
    store = held.store
    with _start_lock:
        unfinished = hygiene.unfinished_report(store)
        if unfinished is not None and unfinished in _threads:
            return unfinished
        if unfinished is None:
            try:
                threshold = held.hygiene_threshold()
            except ThresholdError as error:
                raise ApiError(409, "uncalibrated", str(error)) from None
            unfinished = hygiene.create_report(store, threshold, actor=actor)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        thread = threading.Thread(
            target=_run, args=(app, unfinished), name=f"hygiene-{unfinished}", daemon=True
        )
        _threads[unfinished] = thread
        thread.start()
        return unfinished


def _run(app: Flask, report_id: int) -> None:
    with app.app_context():
        try:
            app.extensions["cqaface"].run_hygiene_report(report_id)
        except Exception:
            log.exception("hygiene report %s failed", report_id)
        finally:
            _threads.pop(report_id, None)


def wait(report_id: int, timeout: float | None = None) -> None:
    """Wait for a report's thread (tests, and a clean shutdown)."""
    thread = _threads.get(report_id)
    if thread is not None:
        thread.join(timeout)


def report(report_id: int) -> dict[str, Any]:
    try:
        return hygiene.report_json(services().store, report_id)
    except hygiene.HygieneError as error:
        raise _api_error(error) from None


def latest() -> dict[str, Any] | None:
    store = services().store
    report_id = hygiene.latest_report(store)
    return None if report_id is None else hygiene.report_json(store, report_id)


def act(action: str, *ids: int, actor: int | None) -> dict[str, Any]:
    """Do an action; a refusal is the ApiError of its status and code."""
    try:
        return ACTIONS[action](services().store, *ids, actor=actor).to_json()
    except hygiene.HygieneError as error:
        raise _api_error(error) from None


def _api_error(error: hygiene.HygieneError) -> ApiError:
    return ApiError(error.status, error.code, str(error), error.details or None)
