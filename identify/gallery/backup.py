"""A portable backup of the whole gallery database: one zip of JSON lines, a file per table.

The database is the source of truth and the FAISS indexes are derived from it, so a backup is
the tables alone; `restore` rebuilds the indexes. Being plain JSON rather than a pg_dump, a
backup also moves a gallery between backends (the embedded SQLite file to PostgreSQL and back).
Rows stream in chunks both ways, so a gallery of millions of faces never sits in memory.
"""

from __future__ import annotations

import base64
import enum
import io
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Enum, LargeBinary, Table, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from identify.gallery import migrate
from identify.gallery.tables import Base

FORMAT = "cqaface-backup/1"
MANIFEST = "manifest.json"
CHUNK = 1000


class BackupError(ValueError):
    """A backup that cannot be written or restored here, with the reason."""


@dataclass
class BackupReport:
    path: str
    revision: str
    rows: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "revision": self.revision, "rows": self.rows}


def backup(engine: Engine, path: str | os.PathLike[str]) -> BackupReport:
    """Write every gallery table of ``engine``'s database to the zip ``path``."""
    revision = _revision(engine)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    rows: dict[str, int] = {}
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        with engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                with archive.open(f"{table.name}.jsonl", "w", force_zip64=True) as out:
                    rows[table.name] = _dump(connection, table, out)
        manifest = {
            "format": FORMAT,
            "revision": revision,
            "created_at": datetime.now(UTC).isoformat(),
            "rows": rows,
        }
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
    partial.replace(path)  # a backup file is complete or absent
    return BackupReport(str(path), revision, rows)


def restore(engine: Engine, path: str | os.PathLike[str]) -> BackupReport:
    """Load the zip ``path`` into ``engine``'s database, which must be migrated to the
    backup's revision and empty; one transaction, so a failed restore leaves it empty."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise BackupError(f"{path} is not a cqaface backup: {error}") from None
    with archive:
        manifest = _manifest(archive)
        revision = _revision(engine)
        if manifest["revision"] != revision:
            raise BackupError(
                f"the backup is at revision {manifest['revision']}, the database at {revision}:"
                f" migrate it with `cqaface db upgrade {manifest['revision']}` first"
            )
        with engine.begin() as connection:
            for table in Base.metadata.sorted_tables:
                if connection.scalar(select(func.count()).select_from(table)):
                    raise BackupError(f"the database is not empty (table {table.name}): refused")
            for table in Base.metadata.sorted_tables:
                _restore_table(connection, table, archive, manifest["rows"].get(table.name))
    return BackupReport(str(path), revision, manifest["rows"])


def _restore_table(
    connection: Any, table: Table, archive: zipfile.ZipFile, expected: int | None
) -> None:
    try:
        loaded = _load(connection, table, archive)
    except SQLAlchemyError as error:
        reason = str(error.orig if hasattr(error, "orig") else error).splitlines()[0]
        raise BackupError(f"table {table.name} does not load: {reason}") from None
    if loaded != expected:
        raise BackupError(
            f"row counts differ from the manifest: {table.name} has {loaded}, expected {expected}"
        )
    _advance_sequence(connection, table)


def _revision(engine: Engine) -> str:
    revision = migrate.current(engine)
    if revision is None:
        raise BackupError("the database has no gallery tables: run `cqaface db upgrade`")
    return revision


def _manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except (KeyError, ValueError) as error:
        raise BackupError(f"no readable {MANIFEST} in the backup: {error}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def _dump(connection: Any, table: Table, out: io.RawIOBase) -> int:
    key = list(table.primary_key.columns)
    result = connection.execution_options(yield_per=CHUNK).execute(select(table).order_by(*key))
    count = 0
    for row in result:
        record = {c.name: _encode(row._mapping[c]) for c in table.columns}
        out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        count += 1
    return count


def _load(connection: Any, table: Table, archive: zipfile.ZipFile) -> int:
    count = 0
    for chunk in _chunks(archive, f"{table.name}.jsonl"):
        connection.execute(
            table.insert(),
            [{c.name: _decode(c, r.get(c.name)) for c in table.columns} for r in chunk],
        )
        count += len(chunk)
    return count


def _chunks(archive: zipfile.ZipFile, name: str) -> Iterator[list[dict[str, Any]]]:
    try:
        stream = archive.open(name)
    except KeyError:
        raise BackupError(f"the backup has no {name}") from None
    chunk: list[dict[str, Any]] = []
    with stream:
        for line in stream:
            chunk.append(json.loads(line))
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _decode(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, LargeBinary):
        return base64.b64decode(value)
    if isinstance(column.type, DateTime):
        moment = datetime.fromisoformat(value)  # SQLite keeps no zone: its times are UTC
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(column.type, Enum) and column.type.enum_class is not None:
        return column.type.enum_class(value)
    return value


def _advance_sequence(connection: Any, table: Table) -> None:
    """Rows came with their ids: PostgreSQL's next ids must follow them (they are FAISS ids
    and audit targets, never reused). SQLite's AUTOINCREMENT follows inserted ids itself."""
    key = list(table.primary_key.columns)
    if connection.dialect.name != "postgresql" or len(key) != 1:
        return
    top = connection.scalar(select(func.max(key[0])))
    if top is not None:
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence(:t, :c), :v)"),
            {"t": table.name, "c": key[0].name, "v": int(top)},
        )
