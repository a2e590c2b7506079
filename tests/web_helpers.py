"""Helpers of the web tests: an app on a migrated database, users and API keys."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

from PIL import Image as PILImage

from identify.app import create_app
from identify.settings import Settings
from identify.web import auth, ratelimit
from identify.web.common import db


def make_app(database_url: str, tmp_path: Path, env: Mapping[str, str] | None = None, **config):
    """An app of the default settings with its data under ``tmp_path`` and the CQAFACE_*
    values of ``env``, whatever this process's environment holds; ``config`` overrides Flask
    keys."""
    settings = Settings.from_env({"CQAFACE_DATA_DIR": str(tmp_path / "data"), **(env or {})})
    flask = {
        "DATABASE_URL": database_url,
        "INDEX_DIR": str(tmp_path / "index"),
        "SECRET_KEY": "test-secret-key-for-signing-only",
        "BROKER_URL": None,
        "TESTING": True,
    }
    flask.update(config)
    return create_app(flask, settings)


def app_with_three_roles(
    database_url: str, tmp_path: Path, env: Mapping[str, str] | None = None, **config
):
    """An app with one user of each role (admin@, ops@, ana@x.org), all with PASSWORD."""
    app = make_app(database_url, tmp_path, env, **config)
    for email, role in (
        ("admin@x.org", "admin"),
        ("ops@x.org", "operator"),
        ("ana@x.org", "analyst"),
    ):
        add_user(app, email, role, PASSWORD)
    return app


def hold_rate_limit_clock(monkeypatch, seconds_into_minute: int = 30) -> None:
    """Stops the rate limiter's clock mid-minute. It counts in fixed one-minute windows, so on
    a real clock a test's few requests can straddle a minute boundary and start a new count."""
    moment = 60.0 * 29_000_000 + seconds_into_minute  # a minute in 2025
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: moment))


PASSWORD = "a long enough password"


def csrf_token(page: str) -> str:
    """The CSRF token in a page's form."""
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def sign_in(app, email: str, password: str = PASSWORD):
    """A test client signed in as ``email`` through the form, and a CSRF token for its posts."""
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return client, csrf_token(client.get("/").get_data(as_text=True))


def add_user(app, email: str, role: str, password: str | None = PASSWORD) -> int:
    with app.app_context(), db() as session:
        return auth.create_user(session, email, role, password).id


def add_key(app, email: str, role: str, scopes: str) -> str:
    """A key of a (new or existing) user with ``role``."""
    from sqlalchemy import select

    from identify.gallery.tables import User

    with app.app_context(), db() as session:
        user = session.scalars(select(User).where(User.email == email)).first()
        if user is None:
            user = auth.create_user(session, email, role, None)
        return auth.create_key(session, user, f"key of {email}", auth.parse_scopes(scopes))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def png_bytes(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (120, 130, 140)).save(out, format="PNG")
    return out.getvalue()


def bomb_png(side: int = 100_000) -> bytes:
    """A small PNG whose header claims side x side pixels (10 G by default), with a highly
    compressed stream of zero rows: what a decompression bomb looks like to a decoder."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()
