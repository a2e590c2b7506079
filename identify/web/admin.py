"""The admin web UI: server-rendered pages behind a login, with roles (admin: everything;
operator: enrol and manage subjects; analyst: search only) and a CSRF token on every form."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from embedder.errors import FaceInputError
from identify.gallery.tables import Face, Image, Role, Subject, User
from identify.services import services
from identify.web import auth, csrf
from identify.web.common import (
    audit,
    audit_page,
    audit_search,
    db,
    first_face_ids,
    parse_k,
    parse_mask,
    read_upload,
    subject_detail,
    subject_page,
)
from identify.web.http_errors import ApiError, face_input_error
from identify.web.params import name_param, page_param, quality_param
from identify.web.state import web_state

admin = Blueprint(
    "admin",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
EVERYONE = (Role.ADMIN, Role.OPERATOR, Role.ANALYST)
MANAGERS = (Role.ADMIN, Role.OPERATOR)
PER_PAGE = 25


@admin.app_context_processor
def _globals() -> dict[str, Any]:
    return {"csrf_token": csrf.token, "me": g.get("user"), "Role": Role}


@admin.before_request
def load_user() -> None:
    """The signed-in user (None when signed out or disabled since), and the form's CSRF check."""
    g.user = None
    user_id = session.get("uid")
    if user_id is not None:
        with db() as s:
            user = s.get(User, user_id)
            if user is not None and not user.disabled and session.get("pw") == _stamp(user):
                s.expunge(user)
                g.user = user
            else:
                session.clear()
    csrf.check()


def _stamp(user: User) -> str | None:
    """A short digest of the user's password hash, kept in their session: a new password (a
    reset) ends the sessions signed in with the old one."""
    if user.password_hash is None:
        return None
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def login_required(*roles: Role) -> Callable:
    allowed = roles or EVERYONE

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if g.user is None:
                return redirect(url_for("admin.login", next=request.full_path))
            if Role(g.user.role) not in allowed:
                raise ApiError(403, "forbidden", "your role does not allow this")
            return view(*args, **kwargs)

        return wrapper

    return decorate


# ----- sign in ------------------------------------------------------------------------------


@admin.route("/login", methods=["GET", "POST"])
def login() -> str | BaseResponse:
    error = None
    if request.method == "POST":
        email = request.form.get("email", "")[:320]
        wait = web_state().login_limit.hit(f"login:{request.remote_addr}")
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"too many sign-in attempts: try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        with db() as s:
            user = auth.check_login(s, email, request.form.get("password", ""))
            if user is not None:
                audit(s, user.id, "login", "user", user.id)
                user_id, stamp = user.id, _stamp(user)
            else:
                audit(s, None, "login_failed", "user", None, email=email)
        if user is not None:
            session.clear()  # a new session: no fixation, a new CSRF token
            session["uid"] = user_id
            session["pw"] = stamp
            target = request.args.get("next", "")
            safe = target.startswith("/") and not target.startswith("//")
            return redirect(target if safe else url_for("admin.dashboard"))
        error = "Wrong e-mail or password."
    return render_template("login.html", error=error), 200 if error is None else 401  # type: ignore[return-value]


@admin.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("admin.login"))


# ----- dashboard ----------------------------------------------------------------------------


@admin.get("/")
@login_required()
def dashboard() -> str:
    from identify.web import enrolment_jobs
    from identify.web.status import gallery_counts, index_state, queue_depth

    jobs = []
    if Role(g.user.role) in MANAGERS:
        jobs, _ = enrolment_jobs.recent(page=1, per_page=5)
    return render_template(
        "dashboard.html",
        counts=gallery_counts(),
        index=index_state(),
        queue_depth=queue_depth(),
        jobs=jobs,
    )


# ----- probe search -------------------------------------------------------------------------


@admin.route("/search", methods=["GET", "POST"])
@login_required()
def search() -> str:
    from identify.web import overlay

    if request.method == "GET":
        return render_template("search.html", result=None, mask="auto", k=5)
    mask = parse_mask(request.form.get("mask"))
    k = parse_k(request.form.get("k"))
    upload = request.files.get("image")
    data = read_upload(upload) if upload is not None else b""
    if not data:
        raise ApiError(400, "missing_image", "choose a photo to search with")
    try:
        result = services().searcher.search(data, k=k, mask=mask)
    except FaceInputError as error:
        raise face_input_error(error) from None
    sha256 = hashlib.sha256(data).hexdigest()
    with db() as s:
        audit_search(s, g.user.id, sha256, result, via="ui")
        faces_of = first_face_ids(s, [m.subject_id for a in result.answers for m in a.matches])
    faces = [
        {
            "number": i,
            "answer": answer,
            "crop": overlay.crop_uri(encoded),
            "branches": overlay.branch_overlays(encoded),
            "gallery_faces": faces_of,
        }
        for i, (answer, encoded) in enumerate(zip(result.answers, result.faces, strict=True), 1)
    ]
    return render_template(
        "search.html",
        result=result,
        probe_sha256=sha256,
        faces=faces,
        picture=overlay.photo_overlay(result.photo, result.faces),
        model_version=services().model_version,
        mask=mask,
        k=k,
    )


# ----- subjects -----------------------------------------------------------------------------


@admin.get("/subjects")
@login_required()
def subjects() -> str:
    q = request.args.get("q", "").strip()
    page = page_param(request.args.get("page"), PER_PAGE)
    with db() as s:
        items, total = subject_page(s, q=q or None, page=page, per_page=PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))
    return render_template("subjects.html", items=items, total=total, q=q, page=page, pages=pages)


@admin.get("/subjects/<int:subject_id>")
@login_required()
def subject(subject_id: int) -> str:
    with db() as s:
        record = subject_detail(s, subject_id)
    if record is None:
        raise ApiError(404, "not_found", f"no subject {subject_id}")
    return render_template("subject.html", subject=record)


@admin.post("/subjects/<int:subject_id>/rename")
@login_required(*MANAGERS)
def rename(subject_id: int) -> BaseResponse:
    name = name_param(request.form.get("name", ""))
    with db() as s:
        row = s.get(Subject, subject_id)
        if row is None:
            raise ApiError(404, "not_found", f"no subject {subject_id}")
        audit(s, g.user.id, "rename_subject", "subject", subject_id, old=row.name, new=name)
        row.name = name
    flash("Renamed.")
    return redirect(url_for("admin.subject", subject_id=subject_id))


@admin.route("/subjects/<int:subject_id>/delete", methods=["GET", "POST"])
@login_required(*MANAGERS)
def delete_subject(subject_id: int) -> str | BaseResponse:
    with db() as s:
        row = s.get(Subject, subject_id)
        name = None if row is None else row.name
    if name is None:
        raise ApiError(404, "not_found", f"no subject {subject_id}")
    if request.method == "GET":
        return render_template("confirm_delete.html", subject_id=subject_id, name=name)
    services().store.delete_subject(subject_id, actor=g.user.id)
    flash(f"Deleted subject {name}.")
    return redirect(url_for("admin.subjects"))


@admin.post("/subjects/<int:subject_id>/images/<int:image_id>/delete")
@login_required(*MANAGERS)
def delete_image(subject_id: int, image_id: int) -> BaseResponse:
    with db() as s:
        image = s.get(Image, image_id)
        if image is None or image.subject_id != subject_id:
            raise ApiError(404, "not_found", f"subject {subject_id} has no image {image_id}")
    services().store.delete_image(image_id, actor=g.user.id)
    flash("Photo deleted.")
    return redirect(url_for("admin.subject", subject_id=subject_id))


@admin.get("/faces/<int:face_id>.png")
@login_required()
def face_crop(face_id: int) -> Response:
    with db() as s:
        png = s.scalar(select(Face.crop_png).where(Face.id == face_id))
    if not png:
        abort(404)
    response = Response(png, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


# ----- gallery hygiene ----------------------------------------------------------------------


@admin.get("/hygiene")
@login_required(*MANAGERS)
def hygiene_page() -> str:
    from identify.gallery.hygiene import recent_merges
    from identify.web import hygiene

    return render_template(
        "hygiene.html", report=hygiene.latest(), merges=recent_merges(services().store)
    )


@admin.post("/hygiene/run")
@login_required(*MANAGERS)
def hygiene_run() -> BaseResponse:
    from identify.web import hygiene

    report_id = hygiene.start_report(g.user.id)
    flash(f"Hygiene report {report_id} is running.")
    return redirect(url_for("admin.hygiene_page"))


def _hygiene_action(action: str, *ids: int, done: str) -> BaseResponse:
    """Do an action and come back to the report, saying what happened or why not."""
    from identify.web import hygiene

    try:
        hygiene.act(action, *ids, actor=g.user.id)
    except ApiError as error:
        if error.status >= 500:
            raise
        flash(f"Refused: {error.message}")
    else:
        flash(done)
    return redirect(url_for("admin.hygiene_page"))


def _form_id(field: str) -> int:
    from identify.web.params import id_param

    return id_param(request.form.get(field), field)


@admin.post("/hygiene/faces/<int:face_id>/move")
@login_required(*MANAGERS)
def hygiene_move(face_id: int) -> BaseResponse:
    target = _form_id("subject_id")
    return _hygiene_action("move_face", face_id, target, done=f"Face {face_id} moved.")


@admin.post("/hygiene/faces/<int:face_id>/remove")
@login_required(*MANAGERS)
def hygiene_remove(face_id: int) -> BaseResponse:
    return _hygiene_action("remove_face", face_id, done=f"Face {face_id} removed.")


@admin.post("/hygiene/merge")
@login_required(*MANAGERS)
def hygiene_merge() -> BaseResponse:
    source, target = _form_id("source_id"), _form_id("target_id")
    done = f"Subject {source} merged into subject {target}."
    return _hygiene_action("merge", source, target, done=done)


@admin.post("/hygiene/merges/<int:merge_id>/undo")
@login_required(*MANAGERS)
def hygiene_undo(merge_id: int) -> BaseResponse:
    return _hygiene_action("undo_merge", merge_id, done=f"Merge {merge_id} undone.")


@admin.post("/hygiene/dismiss")
@login_required(*MANAGERS)
def hygiene_dismiss() -> BaseResponse:
    first, second = _form_id("subject_a"), _form_id("subject_b")
    done = f"Subjects {first} and {second} are two people: not listed again."
    return _hygiene_action("dismiss", first, second, done=done)


# ----- enrolment ----------------------------------------------------------------------------


@admin.route("/enrol", methods=["GET", "POST"])
@login_required(*MANAGERS)
def enrol() -> str | BaseResponse:
    from identify.web import enrolment_jobs

    if request.method == "POST":
        archive = request.files.get("archive")
        folder = request.form.get("folder", "").strip()
        minimum = quality_param(request.form.get("min_quality"))
        if archive is not None and archive.filename:
            job_id = enrolment_jobs.start_zip(archive, archive.filename, g.user.id, minimum)
        elif folder:
            job_id = enrolment_jobs.start_folder(folder, g.user.id, minimum)
        else:
            raise ApiError(400, "missing_source", "choose a zip file or name a server folder")
        return redirect(url_for("admin.job", job_id=job_id))
    jobs, _ = enrolment_jobs.recent(page=1, per_page=20)
    minimum = services().settings.enrol_min_quality
    return render_template("enrol.html", jobs=jobs, min_quality=minimum)


@admin.get("/jobs/<int:job_id>")
@login_required(*MANAGERS)
def job(job_id: int) -> str:
    from identify.web import enrolment_jobs

    return render_template("job.html", job=enrolment_jobs.progress(job_id))


@admin.get("/jobs/<int:job_id>.json")
@login_required(*MANAGERS)
def job_json(job_id: int) -> Response:
    from identify.web import enrolment_jobs

    return jsonify(enrolment_jobs.progress(job_id))


@admin.get("/jobs/<int:job_id>/events")
@login_required(*MANAGERS)
def job_events(job_id: int) -> Response:
    from identify.web import enrolment_jobs, job_events

    return job_events.stream(job_id, enrolment_jobs.live)


# ----- audit --------------------------------------------------------------------------------


@admin.get("/audit")
@login_required(Role.ADMIN)
def audit_log() -> str:
    filters = {k: request.args.get(k, "").strip() for k in ("action", "user", "since", "until")}
    page = page_param(request.args.get("page"), 50)
    with db() as s:
        user_id = None
        if filters["user"]:
            user_id = s.scalar(select(User.id).where(User.email == filters["user"].lower())) or -1
        items, total = audit_page(
            s,
            action=filters["action"] or None,
            user_id=user_id,
            since=filters["since"] or None,
            until=filters["until"] or None,
            page=page,
            per_page=50,
        )
    pages = max(1, -(-total // 50))
    return render_template(
        "audit.html", items=items, total=total, filters=filters, page=page, pages=pages
    )
