"""Managing users and API keys, for the admin pages and the command line alike: the same rules
(a key's scopes within its owner's role, keys and passwords stored hashed, at least one active
admin kept) and every change written to the audit log in the same transaction."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identify.gallery.tables import ApiKey, Role, User, utcnow
from identify.services import services
from identify.web import auth
from identify.web.audit_log import audit
from identify.web.http_errors import ApiError

GENERATED_PASSWORD_BYTES = 12  # 16 characters of URL-safe base64
FIRST_SIGN_IN = ("link", "password")


@dataclass(frozen=True)
class Secret:
    """What a person is shown once: a generated password, or the token of a one-time link."""

    kind: str  # "password" or "link"
    value: str


def parse_role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise ApiError(400, "bad_role", f"the role must be one of {roles}") from None


def parse_scopes(values: list[str]) -> frozenset[str]:
    try:
        return auth.parse_scopes(values)
    except auth.AuthError as error:
        raise ApiError(400, "bad_scope", str(error)) from None


def parse_name(value: Any) -> str:
    name = (value or "").strip() if isinstance(value, str) else None
    if name is None or len(name) > 255:
        raise ApiError(400, "bad_name", "a name has at most 255 characters")
    return name


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ----- users --------------------------------------------------------------------------------


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": Role(user.role).value,
        "disabled": user.disabled,
        "has_password": user.password_hash is not None,
        "created_at": user.created_at.isoformat() if user.created_at else None,
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


def list_users(session: Session) -> list[dict[str, Any]]:
    return [user_json(u) for u in session.scalars(select(User).order_by(User.email))]


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise ApiError(404, "not_found", f"no user {user_id}")
    return user


def create_user(
    session: Session, actor: int | None, email: str, name: str, role: Role, first_sign_in: str
) -> tuple[User, Secret]:
    """A new user who signs in first with a generated password or through a one-time link."""
    if first_sign_in not in FIRST_SIGN_IN:
        raise ApiError(400, "bad_parameter", "first sign-in is by 'link' or 'password'")
    normal = email.strip().lower()
    if session.scalars(select(User.id).where(User.email == normal)).first() is not None:
        raise ApiError(409, "email_taken", f"a user with e-mail {normal} exists already")
    try:  # a concurrent twin fails at the flush, and the whole transaction is rolled back
        user = auth.create_user(session, normal, role, None, name=name)
    except auth.AuthError as error:
        raise ApiError(400, "bad_email", str(error)) from None
    except IntegrityError:
        raise ApiError(409, "email_taken", f"a user with e-mail {normal} exists already") from None
    secret = _first_secret(user, first_sign_in)
    audit(
        session,
        actor,
        "create_user",
        "user",
        user.id,
        email=user.email,
        role=role.value,
        first_sign_in=first_sign_in,
    )
    return user, secret


def set_role(session: Session, actor: int | None, user_id: int, role: Role) -> User:
    user = get_user(session, user_id)
    old = Role(user.role)
    if old == role:
        return user
    if old == Role.ADMIN:
        _keep_an_admin(session, user, "demote")
    user.role = role
    audit(
        session, actor, "set_role", "user", user.id, email=user.email, old=old.value, new=role.value
    )
    return user


def set_disabled(session: Session, actor: int | None, user_id: int, disabled: bool) -> User:
    """Disable (sessions and keys stop working at their next request) or enable a user."""
    user = get_user(session, user_id)
    if user.disabled == disabled:
        return user
    if disabled and Role(user.role) == Role.ADMIN:
        _keep_an_admin(session, user, "disable")
    user.disabled = disabled
    action = "disable_user" if disabled else "enable_user"
    audit(session, actor, action, "user", user.id, email=user.email)
    return user


def reset_password(session: Session, actor: int | None, user_id: int, mode: str) -> Secret:
    """The old password stops working at once; the new one is generated (shown once) or set
    by the user through a one-time link."""
    if mode not in FIRST_SIGN_IN:
        raise ApiError(400, "bad_parameter", "a reset gives a 'link' or a 'password'")
    user = get_user(session, user_id)
    user.password_hash = None
    secret = _first_secret(user, mode)
    audit(session, actor, "reset_password", "user", user.id, email=user.email, mode=mode)
    return secret


def _first_secret(user: User, mode: str) -> Secret:
    if mode == "password":
        password = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
        auth.set_password(user, password)
        user.password_token_hash = user.password_token_expires_at = None
        return Secret("password", password)
    token = secrets.token_urlsafe(32)
    user.password_token_hash = _token_hash(token)  # a new link replaces any earlier one
    user.password_token_expires_at = utcnow() + timedelta(
        hours=services().settings.password_link_hours
    )
    return Secret("link", token)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_user(session: Session, token: str) -> User | None:
    """The enabled user whose unexpired one-time link this is, else None."""
    if not token or len(token) > 100:
        return None
    user = session.scalars(
        select(User).where(User.password_token_hash == _token_hash(token))
    ).first()
    if user is None or user.disabled or user.password_token_expires_at is None:
        return None
    return user if _aware(user.password_token_expires_at) > utcnow() else None


def use_link(session: Session, token: str, password: str) -> User:
    """Set the password through a one-time link, which then stops working."""
    user = link_user(session, token)
    if user is None:
        raise ApiError(404, "bad_link", "this link is not valid: used, replaced or expired")
    try:
        auth.set_password(user, password)
    except auth.AuthError as error:
        raise ApiError(400, "bad_password", str(error)) from None
    user.password_token_hash = user.password_token_expires_at = None
    audit(session, user.id, "set_password", "user", user.id, email=user.email, via="link")
    return user


def _keep_an_admin(session: Session, user: User, verb: str) -> None:
    """Refuse to demote or disable the last active admin. The active admins' rows are locked
    (in id order, so two admins demoting each other at once wait rather than deadlock)."""
    admins = session.scalars(
        select(User.id)
        .where(User.role == Role.ADMIN, User.disabled.is_(False))
        .order_by(User.id)
        .with_for_update()
    ).all()
    if [i for i in admins if i != user.id]:
        return
    raise ApiError(
        409,
        "last_admin",
        f"cannot {verb} {user.email}: the last active admin (make another admin first)",
    )


# ----- API keys -----------------------------------------------------------------------------


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "prefix": key.prefix,
        "name": key.name,
        "user": key.user.email,
        "user_id": key.user_id,
        "scopes": key.scopes.split(",") if key.scopes else [],
        "created_at": key.created_at.isoformat() if key.created_at else None,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "request_count": key.request_count,
        "revoked": key.revoked_at is not None,
    }


def list_keys(session: Session, viewer: User | None) -> list[dict[str, Any]]:
    """Every key for an admin (or the command line, ``viewer`` None), else the viewer's own."""
    query = select(ApiKey).order_by(ApiKey.id)
    if viewer is not None and Role(viewer.role) != Role.ADMIN:
        query = query.where(ApiKey.user_id == viewer.id)
    return [key_json(k) for k in session.scalars(query)]


def may_create_keys(user: User) -> bool:
    return Role(user.role) != Role.ANALYST


def create_key(
    session: Session,
    actor: User | None,
    owner_id: int,
    name: str,
    scopes: frozenset[str],
) -> str:
    """A key for ``owner_id``: an admin (or the command line) gives one to anybody, an operator
    only to themselves, an analyst to nobody; its scopes lie within the owner's role."""
    if actor is not None:
        if not may_create_keys(actor):
            raise ApiError(403, "forbidden", "analysts may not create API keys")
        if Role(actor.role) != Role.ADMIN and owner_id != actor.id:
            raise ApiError(403, "forbidden", "you may create keys for yourself only")
    owner = get_user(session, owner_id)
    if owner.disabled:
        raise ApiError(400, "user_disabled", f"{owner.email} is disabled")
    if not name:
        raise ApiError(400, "bad_name", "a key has a name (what it is for)")
    try:
        key = auth.create_key(session, owner, name, scopes)
    except auth.AuthError as error:
        raise ApiError(403, "scope_beyond_role", str(error)) from None
    prefix = key.split("_")[1]
    audit(
        session,
        actor.id if actor else None,
        "create_key",
        "api_key",
        prefix,
        name=name,
        owner=owner.email,
        scopes=sorted(scopes),
    )
    return key


def visible_key(session: Session, viewer: User | None, prefix: str) -> ApiKey:
    """The key with ``prefix`` if ``viewer`` may manage it (404 otherwise, as for no key)."""
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    mine = key is not None and (
        viewer is None or Role(viewer.role) == Role.ADMIN or key.user_id == viewer.id
    )
    if key is None or not mine:
        raise ApiError(404, "not_found", f"no API key with prefix {prefix}")
    return key


def revoke_key(session: Session, actor: User | None, prefix: str) -> ApiKey:
    key = visible_key(session, actor, prefix)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit(
            session,
            actor.id if actor else None,
            "revoke_key",
            "api_key",
            prefix,
            name=key.name,
            owner=key.user.email,
        )
    return key
