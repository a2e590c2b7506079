"""The JSON API, /api/v1: identify, verify, subjects and their images, enrolment jobs, health,
metrics and the audit log. Every route but /health and /openapi.json wants an API key
(`Authorization: Bearer KEY` or `X-API-Key: KEY`) holding the route's scope."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from embedder.errors import FaceInputError
from identify.gallery.tables import Image, ItemStatus, Subject
from identify.services import services
from identify.subject_names import printable
from identify.web import auth
from identify.web.common import (
    audit,
    audit_page,
    audit_search,
    db,
    parse_k,
    parse_mask,
    parse_threshold,
    read_upload,
    subject_detail,
    subject_json,
    subject_page,
)
from identify.web.http_errors import ApiError, face_input_error
from identify.web.params import id_param, int_param, name_param, page_param, quality_param
from identify.web.state import web_state

api = Blueprint("api", __name__, url_prefix="/api/v1")
PUBLIC = frozenset({"api.health", "api.openapi"})
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def requires(scope: str) -> Callable:
    """The route needs an API key with ``scope`` (401 without a valid key, 403 without it)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if scope not in g.principal.scopes:
                raise ApiError(
                    403, "forbidden", f"this key lacks the scope {scope!r}", {"scope": scope}
                )
            return view(*args, **kwargs)

        wrapper.scope = scope  # type: ignore[attr-defined]
        return wrapper

    return decorate


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-API-Key", "").strip() or None


@api.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC or request.endpoint is None:
        return
    key = presented_key()
    if key is None:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer)")
    with db() as session:
        principal = auth.authenticate_key(session, key)
        if principal is not None:
            web_state().key_usage.count(session, principal.key_id)
    if principal is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    g.principal = principal
    wait = web_state().rate_limit.hit(f"key{principal.key_id}")
    if wait is not None:
        raise ApiError(
            429,
            "rate_limited",
            "too many requests for this key; try again later",
            {"retry_after_s": wait},
            headers={"Retry-After": str(wait)},
        )


def _user_id() -> int:
    return g.principal.user_id


# ----- input --------------------------------------------------------------------------------


def _json_body() -> dict[str, Any]:
    if not request.is_json:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def _params() -> dict[str, Any]:
    """Form fields, or the JSON object's fields."""
    return _json_body() if request.is_json else dict(request.form.items())


def _image_bytes(field: str = "image") -> bytes:
    """The probe: a multipart file field, or base64 in a JSON field."""
    if request.is_json:
        value = _json_body().get(field)
        if not isinstance(value, str) or not value:
            raise ApiError(400, "missing_image", f"the JSON field {field!r} (base64) is required")
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_base64", f"{field!r} is not valid base64") from None
    else:
        upload = request.files.get(field)
        if upload is None:
            raise ApiError(400, "missing_image", f"the multipart field {field!r} is required")
        data = read_upload(upload)
    if not data:
        raise ApiError(400, "empty_file", "the image is empty")
    limit = services().settings.max_photo_bytes
    if len(data) > limit:
        raise ApiError(413, "image_too_large", f"the image is larger than {limit} bytes")
    return data


def _page_args() -> tuple[int, int]:
    per_page = int_param(
        request.args.get("per_page"), "per_page", default=50, minimum=1, maximum=500
    )
    return page_param(request.args.get("page"), per_page), per_page


# ----- search -------------------------------------------------------------------------------


@api.post("/identify")
@requires("identify")
def identify() -> Response:
    params = _params()
    k = parse_k(params.get("k"))
    mask = parse_mask(params.get("mask"))
    threshold = parse_threshold(params.get("threshold"))
    data = _image_bytes()
    try:
        probe = services().searcher.search(data, k=k, mask=mask, threshold=threshold)
    except FaceInputError as error:
        raise face_input_error(error) from None
    sha256 = hashlib.sha256(data).hexdigest()
    with db() as session:
        audit_search(session, _user_id(), sha256, probe, via="api")
    return jsonify(
        probe_sha256=sha256,
        model_version=services().model_version,
        k=k,
        mask=mask,
        faces=[a.to_api_json() for a in probe.answers],
    )


@api.post("/verify")
@requires("identify")
def verify() -> Response:
    params = _params()
    subject_id = id_param(params.get("subject_id"), "subject_id")
    mask = parse_mask(params.get("mask"))
    threshold = parse_threshold(params.get("threshold"))
    data = _image_bytes()
    with db() as session:
        if session.get(Subject, subject_id) is None:
            raise ApiError(404, "not_found", f"no subject {subject_id}")
    try:
        answer = services().searcher.verify(data, subject_id, mask=mask, threshold=threshold)
    except FaceInputError as error:
        raise face_input_error(error) from None
    except LookupError:
        raise ApiError(409, "no_template", f"subject {subject_id} has no face enrolled") from None
    record = answer.to_json()
    record["model_version"] = services().model_version
    with db() as session:
        audit(
            session,
            _user_id(),
            "verify",
            "subject",
            subject_id,
            via="api",
            score=record["score"],
            same=record["same"],
        )
    return jsonify(record)


# ----- subjects -----------------------------------------------------------------------------


@api.get("/subjects")
@requires("identify")
def list_subjects() -> Response:
    page, per_page = _page_args()
    q = request.args.get("q") or None
    with db() as session:
        items, total = subject_page(session, q=q, page=page, per_page=per_page)
    return jsonify(items=items, page=page, per_page=per_page, total=total)


@api.post("/subjects")
@requires("enrol")
def create_subject() -> tuple[Response, int]:
    body = _json_body() or dict(request.form.items())
    name = name_param(body.get("name"))
    external_id = body.get("external_id")
    external_id = None if external_id == "" else external_id
    if external_id is not None and (not isinstance(external_id, str) or len(external_id) > 255):
        raise ApiError(400, "bad_parameter", "external_id is a string of at most 255 characters")
    try:
        with db() as session:
            if (
                external_id is not None
                and session.scalars(
                    select(Subject).where(Subject.external_id == external_id)
                ).first()
            ):
                raise ApiError(409, "conflict", f"external_id {external_id!r} is taken")
            subject = Subject(name=name, external_id=external_id, details={})
            session.add(subject)
            session.flush()
            audit(session, _user_id(), "create_subject", "subject", subject.id, name=name)
            record = subject_json(subject, images=0)
    except IntegrityError:
        raise ApiError(409, "conflict", f"external_id {external_id!r} is taken") from None
    return jsonify(record), 201


@api.get("/subjects/<int:subject_id>")
@requires("identify")
def get_subject(subject_id: int) -> Response:
    with db() as session:
        record = subject_detail(session, subject_id)
    if record is None:
        raise ApiError(404, "not_found", f"no subject {subject_id}")
    return jsonify(record)


@api.patch("/subjects/<int:subject_id>")
@requires("enrol")
def rename_subject(subject_id: int) -> Response:
    name = name_param(_json_body().get("name"))
    with db() as session:
        subject = session.get(Subject, subject_id)
        if subject is None:
            raise ApiError(404, "not_found", f"no subject {subject_id}")
        old = subject.name
        subject.name = name
        audit(session, _user_id(), "rename_subject", "subject", subject_id, old=old, new=name)
        record = subject_json(subject)
    return jsonify(record)


@api.delete("/subjects/<int:subject_id>")
@requires("enrol")
def delete_subject(subject_id: int) -> tuple[str, int]:
    if not services().store.delete_subject(subject_id, actor=_user_id()):
        raise ApiError(404, "not_found", f"no subject {subject_id}")
    return "", 204


@api.post("/subjects/<int:subject_id>/images")
@requires("enrol")
def add_images(subject_id: int) -> tuple[Response, int]:
    uploads = request.files.getlist("image")
    if not uploads:
        raise ApiError(400, "missing_image", "one or more multipart fields 'image' are required")
    with db() as session:
        if session.get(Subject, subject_id) is None:
            raise ApiError(404, "not_found", f"no subject {subject_id}")
    enroller = services().enroller
    results = []
    for upload in uploads:
        data = upload.read()
        name = printable(upload.filename or "upload")  # data, shown as sent: never a path
        if not data:
            results.append({"source": name, "status": "unreadable", "reason": "empty file"})
            continue
        result = enroller.enrol(subject_id, data, source_name=name)
        results.append(
            {
                "source": name,
                "status": result.status.value,
                "reason": result.reason,
                "image_id": result.image_id,
                "face_ids": result.face_ids,
            }
        )
    enrolled = [r for r in results if r["status"] == ItemStatus.ENROLLED.value]
    with db() as session:
        audit(
            session,
            _user_id(),
            "add_images",
            "subject",
            subject_id,
            enrolled=len(enrolled),
            results=[{k: r[k] for k in ("source", "status")} for r in results],
        )
    if len(results) == 1 and not enrolled:
        status, code = ItemStatus(results[0]["status"]).http
        raise ApiError(status, code, results[0]["reason"] or code, {"results": results})
    return jsonify(subject_id=subject_id, results=results), 201 if enrolled else 200


@api.delete("/subjects/<int:subject_id>/images/<int:image_id>")
@requires("enrol")
def delete_image(subject_id: int, image_id: int) -> tuple[str, int]:
    with db() as session:
        image = session.get(Image, image_id)
        if image is None or image.subject_id != subject_id:
            raise ApiError(404, "not_found", f"subject {subject_id} has no image {image_id}")
    services().store.delete_image(image_id, actor=_user_id())
    return "", 204


# ----- enrolment jobs -----------------------------------------------------------------------


@api.post("/enrolments")
@requires("enrol")
def create_enrolment() -> tuple[Response, int]:
    from identify.web import enrolment_jobs

    archive = request.files.get("archive")
    fields = _json_body() or dict(request.form.items())
    minimum = quality_param(fields.get("min_quality"))
    if archive is not None:
        name = archive.filename or "upload.zip"
        job_id = enrolment_jobs.start_zip(archive, name, _user_id(), minimum)
    else:
        folder = fields.get("folder")
        if not isinstance(folder, str) or not folder:
            raise ApiError(
                400, "missing_source", "send a zip as multipart 'archive', or a JSON 'folder'"
            )
        job_id = enrolment_jobs.start_folder(folder, _user_id(), minimum)
    return jsonify(id=job_id, url=f"/api/v1/jobs/{job_id}"), 202


@api.get("/jobs")
@requires("enrol")
def list_jobs() -> Response:
    from identify.web import enrolment_jobs

    page, per_page = _page_args()
    items, total = enrolment_jobs.recent(page=page, per_page=per_page)
    return jsonify(items=items, page=page, per_page=per_page, total=total)


@api.get("/jobs/<int:job_id>")
@requires("enrol")
def get_job(job_id: int) -> Response:
    from identify.web import enrolment_jobs

    return jsonify(enrolment_jobs.progress(job_id))


@api.post("/jobs/<int:job_id>/cancel")
@requires("enrol")
def cancel_job(job_id: int) -> Response:
    from identify.web import enrolment_jobs

    enrolment_jobs.cancel(job_id, _user_id())
    return jsonify(enrolment_jobs.progress(job_id))


# ----- gallery hygiene ----------------------------------------------------------------------


@api.post("/hygiene/reports")
@requires("enrol")
def create_hygiene_report() -> tuple[Response, int]:
    from identify.web import hygiene

    report_id = hygiene.start_report(_user_id())
    return jsonify(id=report_id, url=f"/api/v1/hygiene/reports/{report_id}"), 202


@api.get("/hygiene/reports/<int:report_id>")
@requires("enrol")
def get_hygiene_report(report_id: int) -> Response:
    from identify.web import hygiene

    return jsonify(hygiene.report(report_id))


@api.post("/hygiene/faces/<int:face_id>/move")
@requires("enrol")
def move_face(face_id: int) -> Response:
    from identify.web import hygiene

    subject_id = id_param(_params().get("subject_id"), "subject_id")
    return jsonify(hygiene.act("move_face", face_id, subject_id, actor=_user_id()))


@api.post("/hygiene/faces/<int:face_id>/remove")
@requires("enrol")
def remove_face(face_id: int) -> Response:
    from identify.web import hygiene

    return jsonify(hygiene.act("remove_face", face_id, actor=_user_id()))


@api.post("/hygiene/merges")
@requires("enrol")
def merge_subjects() -> tuple[Response, int]:
    from identify.web import hygiene

    params = _params()
    source = id_param(params.get("source_id"), "source_id")
    target = id_param(params.get("target_id"), "target_id")
    return jsonify(hygiene.act("merge", source, target, actor=_user_id())), 201


@api.post("/hygiene/merges/<int:merge_id>/undo")
@requires("enrol")
def undo_merge(merge_id: int) -> Response:
    from identify.web import hygiene

    return jsonify(hygiene.act("undo_merge", merge_id, actor=_user_id()))


@api.post("/hygiene/dismissals")
@requires("enrol")
def dismiss_pair() -> tuple[Response, int]:
    from identify.web import hygiene

    params = _params()
    first = id_param(params.get("subject_a"), "subject_a")
    second = id_param(params.get("subject_b"), "subject_b")
    outcome = hygiene.act("dismiss", first, second, actor=_user_id())
    return jsonify(outcome), 200 if outcome["already"] else 201


# ----- operations ---------------------------------------------------------------------------


@api.get("/health")
def health() -> tuple[Response, int]:
    from identify.web.status import health_report

    report = health_report()
    return jsonify(report), 200 if report["status"] == "ok" else 503


@api.get("/metrics")
@requires("admin")
def metrics() -> Response:
    from identify.web.status import gauges

    body = web_state().metrics.render(gauges())
    return Response(body, mimetype="text/plain; version=0.0.4; charset=utf-8")


@api.get("/audit")
@requires("admin")
def audit_log() -> Response:
    page, per_page = _page_args()
    with db() as session:
        items, total = audit_page(
            session,
            action=request.args.get("action"),
            user_id=request.args.get("user_id"),
            since=request.args.get("since"),
            until=request.args.get("until"),
            page=page,
            per_page=per_page,
        )
    return jsonify(items=items, page=page, per_page=per_page, total=total)


@api.get("/openapi.json")
def openapi() -> Response:
    return Response(OPENAPI_PATH.read_text(), mimetype="application/json")


def documented_routes() -> set[tuple[str, str]]:
    """(method, OpenAPI path) for every operation of openapi.json (for its test)."""
    spec = json.loads(OPENAPI_PATH.read_text())
    return {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m != "parameters"}
