"""The schema is made by versioned migrations that match the models, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from identify.cli.main import main
from identify.gallery import migrate
from identify.gallery.tables import Base

TABLES = {t.name for t in Base.metadata.sorted_tables}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("postgres_database")()


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_to_head_creates_every_table_and_matches_the_models(empty_url):
    migrate.upgrade(empty_url)
    assert _tables(empty_url) >= TABLES
    assert _diff(empty_url) == [], "models changed without a migration: run alembic revision"


def test_downgrade_to_base_removes_every_table(empty_url):
    migrate.upgrade(empty_url)
    migrate.downgrade("base", empty_url)
    assert _tables(empty_url) & TABLES == set()
    migrate.upgrade(empty_url)  # and the way back up still works
    assert _tables(empty_url) >= TABLES


def test_cli_db_upgrade_and_downgrade_use_the_configured_url(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CQAFACE_DATABASE_URL", url)
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == _head()
    assert main(["db", "downgrade", "base"]) == 0
    assert _tables(url) & TABLES == set()


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path):
    from identify.settings import Settings

    settings = Settings.from_env({"CQAFACE_DATA_DIR": str(tmp_path / "data")})
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'cqaface.db'}"
    assert settings.index_dir == tmp_path / "data" / "index"


def test_jobs_revision_adds_and_removes_its_columns(empty_url):
    migrate.upgrade(empty_url, "0002_jobs")
    engine = create_engine(empty_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("job_items")}
        assert {"attempts", "started_at", "finished_at"} <= columns
        migrate.downgrade("0001", empty_url)
        columns = {c["name"] for c in inspect(engine).get_columns("enrolment_jobs")}
        assert not {"kind", "options", "task_id", "started_at"} & columns
    finally:
        engine.dispose()


def test_accounts_revision_keeps_users_keys_and_audit_and_counts_from_zero(empty_url):
    from sqlalchemy import text

    migrate.upgrade(empty_url, "0003_web")
    engine = create_engine(empty_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, email, name, role, disabled, created_at) "
                    "VALUES (1, 'a@x.org', '', 'admin', false, CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO api_keys (user_id, name, prefix, key_hash, scopes, created_at) "
                    "VALUES (1, 'k', 'abc', 'h', 'identify', CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO audit_log (at, user_id, action, details) "
                    "VALUES (CURRENT_TIMESTAMP, 1, 'login', '{}')"
                )
            )
        migrate.upgrade(empty_url, "0004_accounts")  # SQLite rebuilds `users`: nothing cascades
        with engine.connect() as connection:
            assert connection.execute(text("SELECT request_count FROM api_keys")).all() == [(0,)]
            users = connection.execute(text("SELECT email, password_token_hash FROM users"))
            assert users.all() == [("a@x.org", None)]
        migrate.downgrade("0003_web", empty_url)
        assert "request_count" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT prefix FROM api_keys")).all() == [("abc",)]
            assert connection.execute(text("SELECT user_id FROM audit_log")).all() == [(1,)]
    finally:
        engine.dispose()


def test_blob_revision_stores_compressed_bytes_uncompressed_on_postgres(postgres_database):
    from sqlalchemy import text

    url = postgres_database()
    storage = text(
        "SELECT attrelid::regclass::text, attstorage FROM pg_attribute "
        "WHERE (attrelid = 'faces'::regclass AND attname = 'crop_png') "
        "OR (attrelid = 'images'::regclass AND attname = 'content') ORDER BY 1"
    )
    engine = create_engine(url)
    try:
        migrate.upgrade(url)
        with engine.connect() as connection:
            assert connection.execute(storage).all() == [("faces", "e"), ("images", "e")]
        migrate.downgrade("0004_accounts", url)
        with engine.connect() as connection:
            assert connection.execute(storage).all() == [("faces", "x"), ("images", "x")]
    finally:
        engine.dispose()


def test_quality_revision_adds_face_quality_and_low_quality_and_takes_them_back(empty_url):
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    migrate.upgrade(empty_url, "0007_face_quality")
    engine = create_engine(empty_url)
    try:
        assert "quality" in {c["name"] for c in inspect(engine).get_columns("faces")}
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO enrolment_jobs (id, source, kind, status, total_items, "
                    "created_at, updated_at) VALUES (1, 'x', 'folder', 'done', 1, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO job_items (job_id, path, subject_name, status, reason, "
                    "attempts, updated_at) VALUES (1, 'a.jpg', 'a', 'low_quality', "
                    "'face quality 0.1000 is under the minimum 0.2 to enrol', 1, "
                    "CURRENT_TIMESTAMP)"
                )
            )
        migrate.downgrade("0006_face_detector", empty_url)
        assert "quality" not in {c["name"] for c in inspect(engine).get_columns("faces")}
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT status, reason FROM job_items")).all()
        assert rows == [("failed", "face quality 0.1000 is under the minimum 0.2 to enrol")]
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE job_items SET status = 'low_quality'"))
        migrate.upgrade(empty_url)
    finally:
        engine.dispose()
