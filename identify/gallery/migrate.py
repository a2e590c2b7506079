"""Alembic, configured in code: `migrations/` holds the environment and the versions, and the
database URL comes from identify's settings (no alembic.ini to keep in step)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from identify.settings import supported_url

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    """A Config pointing at `migrations/` and at ``url`` (a CQAFACE_DATABASE_URL)."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(f"no Alembic environment at {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolation: a literal % in a password must be doubled.
    url = supported_url(url)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (an id, `head`, or `+1`)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(revision: str, url: str) -> None:
    """Migrate down to ``revision`` (an id, `base`, or `-1`); required, never implied."""
    command.downgrade(alembic_config(url), revision)


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
