"""Backup and restore: a gallery written to a zip and loaded elsewhere answers every search the
same way, keeps its ids and audit trail, and a restore never half-happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from sqlalchemy import func, select
from synthetic import Live, add, face, live, near, unit

from identify.gallery import migrate
from identify.gallery.backup import BackupError, backup, restore
from identify.gallery.db import make_engine
from identify.gallery.tables import AuditEntry, Face, Image, Subject

SUBJECTS = 30


def open_gallery(url: str, index_dir) -> Live:
    gallery = live(make_engine(url), index_dir)
    gallery.index.open()
    return gallery


def answers(gallery: Live, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, ids = gallery.index.index().search(probes, 5)
    return np.round(scores, 5), ids


@pytest.fixture
def filled(database_url, tmp_path):
    """A gallery of 30 subjects with 3 photos each, one deleted subject, masked templates,
    kept crops, and the probes to ask it."""
    gallery = open_gallery(database_url, tmp_path / "index-a")
    rng = np.random.default_rng(7)
    people = unit(rng, SUBJECTS)
    for i, person in enumerate(people):
        for k in range(3):
            record = face(near(person, rng), masked_vector=near(person, rng, 0.6))
            record.crop_png = f"crop {i} {k}".encode()
            add(gallery.store, f"person <{i}>", f"p{i}-{k}", record)
    gallery.store.delete_subject(1, actor=None)
    probes = np.stack([near(p, rng) for p in people])
    yield gallery, probes
    gallery.store.engine.dispose()


def count(gallery: Live, model) -> int:
    with gallery.store.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_restored_gallery_answers_every_search_the_same(filled, tmp_path):
    gallery, probes = filled
    report = backup(gallery.store.engine, tmp_path / "gallery.zip")
    assert report.rows["subjects"] == SUBJECTS - 1 and report.rows["faces"] == 3 * (SUBJECTS - 1)

    target = f"sqlite:///{tmp_path / 'restored.db'}"
    migrate.upgrade(target)
    restore(make_engine(target), tmp_path / "gallery.zip")
    again = open_gallery(target, tmp_path / "index-b")

    for before, after in zip(answers(gallery, probes), answers(again, probes), strict=True):
        np.testing.assert_array_equal(before, after)
    assert gallery.store.names(range(SUBJECTS + 1)) == again.store.names(range(SUBJECTS + 1))

    def crops(g: Live) -> list[bytes | None]:
        with g.store.sessions() as session:
            return session.scalars(select(Face.crop_png).order_by(Face.id)).all()

    assert crops(again) == crops(gallery) and crops(again)[0] == b"crop 1 0"
    assert count(again, AuditEntry) == count(gallery, AuditEntry) == 1


def test_a_gallery_moves_to_postgresql_from_either_backend(filled, tmp_path, postgres_database):
    gallery, probes = filled
    backup(gallery.store.engine, tmp_path / "gallery.zip")
    target = postgres_database()
    migrate.upgrade(target)
    restore(make_engine(target), tmp_path / "gallery.zip")
    again = open_gallery(target, tmp_path / "index-pg")
    np.testing.assert_array_equal(answers(gallery, probes)[1], answers(again, probes)[1])


def test_ids_handed_out_after_a_restore_follow_the_restored_ones(filled, tmp_path):
    gallery, _ = filled
    backup(gallery.store.engine, tmp_path / "gallery.zip")
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    migrate.upgrade(target)
    restore(make_engine(target), tmp_path / "gallery.zip")
    again = open_gallery(target, tmp_path / "index-b")
    result = add(again.store, "newcomer", "new-photo", face(unit(np.random.default_rng(1))))
    assert result.subject_id == SUBJECTS + 1  # never a deleted or restored subject's id
    with again.store.sessions() as session:
        assert session.scalar(select(func.max(Image.id))) == result.image_id


def test_restore_refuses_a_database_that_is_not_empty(filled, tmp_path):
    gallery, _ = filled
    backup(gallery.store.engine, tmp_path / "gallery.zip")
    before = count(gallery, Subject)
    with pytest.raises(BackupError, match="not empty"):
        restore(gallery.store.engine, tmp_path / "gallery.zip")
    assert count(gallery, Subject) == before


def test_restore_refuses_an_unmigrated_database_and_a_file_that_is_no_backup(filled, tmp_path):
    gallery, _ = filled
    backup(gallery.store.engine, tmp_path / "gallery.zip")
    bare = make_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    with pytest.raises(BackupError, match="db upgrade"):
        restore(bare, tmp_path / "gallery.zip")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(BackupError, match="not a cqaface backup"):
        restore(gallery.store.engine, junk)


def test_a_backup_that_lost_rows_is_refused_and_leaves_the_database_empty(filled, tmp_path):
    gallery, _ = filled
    backup(gallery.store.engine, tmp_path / "gallery.zip")
    damaged = tmp_path / "damaged.zip"
    with (
        zipfile.ZipFile(tmp_path / "gallery.zip") as source,
        zipfile.ZipFile(damaged, "w") as out,
    ):
        for name in source.namelist():
            data = source.read(name)
            if name == "faces.jsonl":
                data = b"".join(data.splitlines(keepends=True)[:-1])
            out.writestr(name, data)
    target = make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    migrate.upgrade(str(target.url))
    with pytest.raises(BackupError, match="row counts"):
        restore(target, damaged)
    with target.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Subject.__table__)) == 0


def test_backup_and_restore_commands_round_trip_and_rebuild_the_index(filled, tmp_path):
    gallery, _ = filled
    env_a = {**os.environ, "CQAFACE_DATABASE_URL": gallery.store.engine.url.render_as_string(False)}
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    migrate.upgrade(target)
    out = tmp_path / "cli.zip"
    run = [sys.executable, "-m", "identify.cli"]
    first = subprocess.run(
        [*run, "backup", str(out)], env=env_a, capture_output=True, text=True, check=True
    )
    assert json.loads(first.stdout)["rows"]["subjects"] == SUBJECTS - 1
    env_b = {
        **os.environ,
        "CQAFACE_DATABASE_URL": target,
        "CQAFACE_INDEX_DIR": str(tmp_path / "index-cli"),
    }
    second = subprocess.run(
        [*run, "restore", str(out)], env=env_b, capture_output=True, text=True, check=True
    )
    assert json.loads(second.stdout)["rows"]["faces"] == 3 * (SUBJECTS - 1)
    assert sorted(p.suffix for p in (tmp_path / "index-cli").iterdir())  # indexes were written
