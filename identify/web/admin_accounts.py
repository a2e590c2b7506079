"""The admin UI's account pages: users (admins only) and API keys (everyone sees their own; an
admin sees and manages all, an operator creates keys for themselves, an analyst none), and the
one-time page where an invited user sets a password. The rules live in `accounts.py`."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from identify.gallery.tables import Role, User
from identify.web import accounts, auth
from identify.web.accounts import Secret
from identify.web.admin import load_user, login_required
from identify.web.common import db
from identify.web.http_errors import ApiError
from identify.web.params import id_param
from identify.web.state import web_state

accounts_ui = Blueprint("accounts", __name__)
accounts_ui.before_request(load_user)


def _one(name: str, default: str = "") -> str:
    """A form field given at most once (a repeated field is refused, not half-read)."""
    values = request.form.getlist(name)
    if len(values) > 1:
        raise ApiError(400, "bad_parameter", f"the field {name!r} is given {len(values)} times")
    return values[0] if values else default


def _id_field(name: str) -> int:
    return id_param(_one(name), name)


def _shown_once(title: str, secret: Secret, **context: object) -> str:
    link = None
    if secret.kind == "link":
        link = url_for("accounts.set_password", token=secret.value, _external=True)
    return render_template("secret.html", title=title, secret=secret, link=link, **context)


# ----- users --------------------------------------------------------------------------------


@accounts_ui.get("/users")
@login_required(Role.ADMIN)
def users() -> str:
    with db() as s:
        items = accounts.list_users(s)
    return render_template("users.html", items=items, roles=list(Role))


@accounts_ui.post("/users")
@login_required(Role.ADMIN)
def create_user() -> str:
    role = accounts.parse_role(_one("role"))
    name = accounts.parse_name(_one("name"))
    with db() as s:
        user, secret = accounts.create_user(
            s, g.user.id, _one("email"), name, role, _one("first_sign_in", "link")
        )
        email = user.email
    return _shown_once(f"User {email} created", secret, email=email)


@accounts_ui.get("/users/<int:user_id>")
@login_required(Role.ADMIN)
def user(user_id: int) -> str:
    with db() as s:
        record = accounts.user_json(accounts.get_user(s, user_id))
    return render_template("user.html", user=record, roles=list(Role))


@accounts_ui.post("/users/<int:user_id>/role")
@login_required(Role.ADMIN)
def set_role(user_id: int) -> BaseResponse:
    role = accounts.parse_role(_one("role"))
    with db() as s:
        email = accounts.set_role(s, g.user.id, user_id, role).email
    flash(f"{email} is now {role.value}.")
    return redirect(url_for("accounts.user", user_id=user_id))


@accounts_ui.post("/users/<int:user_id>/disable")
@login_required(Role.ADMIN)
def disable(user_id: int) -> BaseResponse:
    with db() as s:
        email = accounts.set_disabled(s, g.user.id, user_id, True).email
    flash(f"{email} is disabled: their sessions and API keys no longer work.")
    return redirect(url_for("accounts.user", user_id=user_id))


@accounts_ui.post("/users/<int:user_id>/enable")
@login_required(Role.ADMIN)
def enable(user_id: int) -> BaseResponse:
    with db() as s:
        email = accounts.set_disabled(s, g.user.id, user_id, False).email
    flash(f"{email} is enabled again.")
    return redirect(url_for("accounts.user", user_id=user_id))


@accounts_ui.post("/users/<int:user_id>/password")
@login_required(Role.ADMIN)
def reset_password(user_id: int) -> str:
    with db() as s:
        secret = accounts.reset_password(s, g.user.id, user_id, _one("mode", "link"))
        email = accounts.get_user(s, user_id).email
    return _shown_once(f"New password for {email}", secret, email=email)


# ----- the one-time link --------------------------------------------------------------------


@accounts_ui.route("/password/<token>", methods=["GET", "POST"])
def set_password(token: str) -> str | BaseResponse:
    if request.method == "POST":
        password = _one("password")
        if password != _one("again"):
            raise ApiError(400, "bad_password", "the two passwords differ")
        with db() as s:
            accounts.use_link(s, token, password)
        flash("Your password is set: sign in with it.")
        return redirect(url_for("admin.login"))
    with db() as s:
        user = accounts.link_user(s, token)
        email = None if user is None else user.email
    if email is None:
        raise ApiError(404, "bad_link", "this link is not valid: used, replaced or expired")
    return render_template("set_password.html", email=email, minimum=auth.MIN_PASSWORD)


# ----- API keys -----------------------------------------------------------------------------


@accounts_ui.get("/keys")
@login_required()
def keys() -> str:
    me = g.user
    with db() as s:
        web_state().key_usage.flush(s)
        items = accounts.list_keys(s, me)
        owners = []
        if Role(me.role) == Role.ADMIN:
            owners = [
                {"id": u.id, "email": u.email, "role": Role(u.role).value}
                for u in s.scalars(
                    select(User).where(User.disabled.is_(False)).order_by(User.email)
                )
            ]
    return render_template(
        "keys.html",
        items=items,
        owners=owners,
        may_create=accounts.may_create_keys(me),
        scopes=[sc for sc in auth.SCOPES if sc in auth.ROLE_SCOPES[Role(me.role)]],
    )


@accounts_ui.post("/keys")
@login_required()
def create_key() -> str:
    scopes = accounts.parse_scopes(request.form.getlist("scopes"))
    name = accounts.parse_name(_one("name"))
    owner_id = _id_field("owner") if _one("owner") else g.user.id
    with db() as s:
        key = accounts.create_key(s, g.user, owner_id, name, scopes)
        owner = accounts.get_user(s, owner_id).email
    secret = Secret("key", key)
    ordered = [sc for sc in auth.SCOPES if sc in scopes]
    return _shown_once(f"API key “{name}” created", secret, email=owner, scopes=ordered)


@accounts_ui.route("/keys/<prefix>/revoke", methods=["GET", "POST"])
@login_required()
def revoke_key(prefix: str) -> str | BaseResponse:
    if request.method == "GET":
        with db() as s:
            key = accounts.key_json(accounts.visible_key(s, g.user, prefix))
        return render_template("confirm_revoke.html", key=key)
    with db() as s:
        name = accounts.revoke_key(s, g.user, prefix).name
    flash(f"Revoked the key “{name}” ({prefix}).")
    return redirect(url_for("accounts.keys"))
