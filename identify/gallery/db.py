"""Engines and sessions for one database URL: SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from identify.settings import supported_url


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (a CQAFACE_DATABASE_URL; see identify.settings.supported_url).

    SQLite gets foreign keys switched on (cascades depend on them), WAL so that searches read
    while enrolment writes, and a busy timeout instead of immediate "database is locked".
    """
    url = supported_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        _make_folder(Path(parsed.database).parent)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def _make_folder(folder: Path) -> None:
    """The SQLite file's folder, made on first use; a folder that cannot be made is a bad
    setting (ValueError: the CLI's status 2), not a crash."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(
            f"cannot create the folder {folder} for the database (CQAFACE_DATABASE_URL): {reason}"
        ) from None


def unusable_sqlite(error: DBAPIError) -> str | None:
    """SQLite's own word for a file that cannot serve as the gallery (a folder that cannot be
    opened, a file that is something else, a read-only file), else None: a bad setting."""
    import sqlite3

    if not isinstance(error.orig, sqlite3.DatabaseError):
        return None
    text = str(error.orig)
    known = ("unable to open database file", "file is not a database", "readonly database")
    return text if any(k in text for k in known) else None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded rows usable after commit (results outlive transactions)."""
    return sessionmaker(engine, expire_on_commit=False)


def is_outage(error: DBAPIError) -> bool:
    """A lost, refused or busy connection (a server restarting, a locked SQLite file), as
    opposed to a bad query or a missing table: the API answers 503, the CLI exits 3."""
    import sqlite3

    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError | InterfaceError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate:  # PostgreSQL: connection exceptions (08) and server shutdown / start-up (57P)
        return sqlstate.startswith(("08", "57P01", "57P02", "57P03"))
    if isinstance(error.orig, sqlite3.Error):
        return "locked" in str(error.orig) or "busy" in str(error.orig)
    return True  # a driver error without a state: the connection itself failed
