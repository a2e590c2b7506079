"""Migration 0003_web: roles become admin/operator/analyst with their users kept, API keys get
scopes; both ways, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from identify.gallery import migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("postgres_database")()


def _roles(engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT email, role FROM users")).all())


def test_roles_are_mapped_up_and_down_and_checked(empty_url):
    migrate.upgrade(empty_url, "0002_jobs")
    engine = create_engine(empty_url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            for email, role in (("o@x.org", "owner"), ("a@x.org", "admin"), ("u@x.org", "user")):
                connection.execute(
                    text(
                        "INSERT INTO users (email, name, role, disabled, created_at)"
                        " VALUES (:e, '', :r, false, :t)"
                    ),
                    {"e": email, "r": role, "t": now},
                )
        migrate.upgrade(empty_url, "0003_web")
        assert _roles(engine) == {"o@x.org": "admin", "a@x.org": "admin", "u@x.org": "analyst"}
        assert "scopes" in {c["name"] for c in inspect(engine).get_columns("api_keys")}
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE users SET role = 'owner'"))
        with engine.begin() as connection:
            connection.execute(text("UPDATE users SET role = 'operator' WHERE email = 'a@x.org'"))
        migrate.downgrade("0002_jobs", empty_url)
        assert _roles(engine) == {"o@x.org": "admin", "a@x.org": "user", "u@x.org": "user"}
        assert "scopes" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
        assert "last_login_at" not in {c["name"] for c in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()
