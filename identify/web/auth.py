"""Who is asking: users with a role and a password hash, API keys with scopes.

An API key is shown once, at creation: ``cqf_<prefix>_<secret>``. The database keeps the prefix
(to find the row) and the SHA-256 of the whole key (a 256-bit random secret needs no slow hash;
the comparison is constant-time). A key's effective scopes are its own scopes intersected with
what its user's role allows, so demoting a user narrows every key they hold.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from identify.gallery.tables import ApiKey, Role, User, utcnow

SCOPES: tuple[str, ...] = ("identify", "enrol", "admin")
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(SCOPES),
    Role.OPERATOR: frozenset({"identify", "enrol"}),
    Role.ANALYST: frozenset({"identify"}),
}
KEY_MARK = "cqf"
TOUCH_EVERY = timedelta(minutes=1)
MIN_PASSWORD = 10
# A constant hash checked when the e-mail is unknown, so both failures take the same time.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


class AuthError(ValueError):
    """Bad input to a user or key operation (an unknown scope, a short password...)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user, the key used (None for a web session), the scopes."""

    user_id: int
    email: str
    role: Role
    scopes: frozenset[str]
    key_id: int | None = None


def parse_scopes(text: str | list[str]) -> frozenset[str]:
    items = text.split(",") if isinstance(text, str) else text
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = scopes - set(SCOPES)
    if unknown or not scopes:
        raise AuthError(f"scopes must be some of {', '.join(SCOPES)}; got {sorted(scopes)}")
    return scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(
    session: Session, email: str, role: Role | str, password: str | None, name: str = ""
) -> User:
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise AuthError(f"not an e-mail address: {email!r}")
    if session.scalars(select(User).where(User.email == email)).first() is not None:
        raise AuthError(f"a user with e-mail {email} exists already")
    if password is not None and len(password) < MIN_PASSWORD:
        raise AuthError(f"passwords have at least {MIN_PASSWORD} characters")
    user = User(
        email=email,
        name=name,
        role=Role(role),
        password_hash=None if password is None else generate_password_hash(password),
        disabled=False,
    )
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"passwords have at least {MIN_PASSWORD} characters")
    user.password_hash = generate_password_hash(password)


def check_login(session: Session, email: str, password: str) -> User | None:
    """The enabled user with this e-mail and password, else None."""
    user = session.scalars(select(User).where(User.email == email.strip().lower())).first()
    if user is None or user.password_hash is None or user.disabled:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    user.last_login_at = utcnow()
    return user


def create_key(session: Session, user: User, name: str, scopes: frozenset[str]) -> str:
    """A new key for ``user``; returns the key itself (the only time it exists in clear)."""
    allowed = ROLE_SCOPES[Role(user.role)]
    if not scopes <= allowed:
        raise AuthError(
            f"a {Role(user.role).value} may hold only the scopes {', '.join(sorted(allowed))}"
        )
    prefix = secrets.token_hex(6)
    key = f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiKey(
            user_id=user.id,
            name=name,
            prefix=prefix,
            key_hash=hash_key(key),
            scopes=",".join(s for s in SCOPES if s in scopes),
        )
    )
    session.flush()
    return key


def authenticate_key(session: Session, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key of an enabled user, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_MARK or len(key) > 200:
        return None
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)):
        return None
    user = row.user
    if row.revoked_at is not None or user.disabled:
        return None
    now = utcnow()
    last = row.last_used_at
    if last is None or now - (last if last.tzinfo else last.replace(tzinfo=UTC)) > TOUCH_EVERY:
        row.last_used_at = now  # a write at most once a minute per key, not per request
    scopes = frozenset(row.scopes.split(",")) & ROLE_SCOPES[Role(user.role)]
    return Principal(user.id, user.email, Role(user.role), scopes, row.id)


def revoke_key(session: Session, prefix: str) -> bool:
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return True
