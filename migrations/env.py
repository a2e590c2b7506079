"""Alembic environment: the URL from identify's settings (or the caller's Config), the
metadata from identify.gallery.tables, batch mode on SQLite so that ALTERs work there too."""

from __future__ import annotations

from alembic import context

from identify.gallery.db import make_engine
from identify.gallery.tables import Base
from identify.settings import Settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch mode rebuilds a table by copying it and dropping the original: with foreign
            # keys enforced, dropping `users` would cascade to every API key and null the audit
            # log's users. SQLite's own advice: keys off while a table is rebuilt (outside any
            # transaction, where the pragma takes effect; this engine is disposed after).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
