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


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path, monkeypatch):
    from identify import settings

    monkeypatch.delenv("CQAFACE_DATABASE_URL", raising=False)
    monkeypatch.setenv("CQAFACE_DATA_DIR", str(tmp_path / "data"))
    assert settings.database_url() == f"sqlite:///{tmp_path / 'data' / 'cqaface.db'}"
    assert settings.index_dir() == tmp_path / "data" / "index"


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
