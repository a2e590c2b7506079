"""The gallery: idempotent enrolment, templates that follow the faces, deletions that leave
nothing behind, and an index that always says what the database says (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sqlalchemy import func, select
from synthetic import DIM, Live, add, face, live, near, sha, unit

from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller, photos_by_subject
from identify.gallery.store import GalleryStore
from identify.gallery.tables import (
    AuditEntry,
    Embedding,
    Face,
    Image,
    ItemStatus,
    Subject,
    Template,
    TemplateKind,
)
from identify.gallery.vectors import normalise
from identify.settings import Settings


@pytest.fixture
def gallery(database_url, tmp_path):
    engine = make_engine(database_url)
    g = live(engine, tmp_path / "index")
    g.index.open()
    yield g
    engine.dispose()


@pytest.fixture
def enroller(gallery, encoder) -> Enroller:
    dim = int(encoder.embedder.config.embedding_size)
    store = GalleryStore(gallery.store.engine, model_version=encoder.model_version, dim=dim)
    return Enroller(store, encoder, keep="none", masked_templates=False)


def count(gallery: Live, model) -> int:
    with gallery.store.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def template(gallery: Live, subject_id: int, kind=TemplateKind.NORMAL) -> Template | None:
    with gallery.store.sessions() as session:
        return session.scalars(
            select(Template).where(Template.subject_id == subject_id, Template.kind == kind)
        ).one_or_none()


def audited(gallery: Live) -> list[tuple[str, str, str, dict]]:
    with gallery.store.sessions() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.action, e.target_type, e.target_id, e.details) for e in rows]


def top1(gallery: Live, vector: np.ndarray) -> int:
    return int(gallery.index.index().search(vector, 1)[1][0, 0])


def test_the_same_photo_twice_adds_nothing(gallery):
    rng = np.random.default_rng(0)
    v = unit(rng)
    first = add(gallery.store, "alice", "photo-1", face(v))
    again = add(gallery.store, "alice", "photo-1", face(v))
    assert first.status == ItemStatus.ENROLLED
    assert again.status == ItemStatus.DUPLICATE
    assert again.image_id == first.image_id and "enrolled before" in again.reason
    assert (count(gallery, Image), count(gallery, Face), count(gallery, Embedding)) == (1, 1, 1)
    assert template(gallery, first.subject_id).face_count == 1


def test_a_photo_enrolled_for_one_subject_is_a_duplicate_for_another(gallery):
    v = unit(np.random.default_rng(1))
    alice = add(gallery.store, "alice", "photo-1", face(v))
    bob = add(gallery.store, "bob", "photo-1", face(v))
    assert bob.status == ItemStatus.DUPLICATE and bob.subject_id == alice.subject_id


def test_template_is_the_normalised_mean_of_the_unmasked_faces(gallery):
    rng = np.random.default_rng(2)
    a, b, masked = unit(rng, 3)
    subject = add(gallery.store, "alice", "p1", face(a)).subject_id
    add(gallery.store, subject, "p2", face(b))
    add(gallery.store, subject, "p3", face(masked, masked=True))  # a masked photo of her
    normal = template(gallery, subject)
    assert normal.face_count == 2
    np.testing.assert_allclose(
        np.frombuffer(normal.vector, "<f4"), normalise((a + b) / 2), atol=1e-6
    )
    masked_template = template(gallery, subject, TemplateKind.MASKED)
    assert masked_template.face_count == 1  # the really masked face feeds the masked template


def test_synthetic_masked_copies_make_the_masked_template(gallery):
    rng = np.random.default_rng(3)
    v, m1, m2 = unit(rng, 3)
    subject = add(gallery.store, "alice", "p1", face(v, masked_vector=m1)).subject_id
    add(gallery.store, subject, "p2", face(near(v, rng), masked_vector=m2))
    masked = template(gallery, subject, TemplateKind.MASKED)
    np.testing.assert_allclose(np.frombuffer(masked.vector, "<f4"), normalise(m1 + m2), atol=1e-6)
    assert int(gallery.index.index(TemplateKind.MASKED).search(m1, 1)[1][0, 0]) == subject


def test_enrolled_subjects_are_found_by_their_other_photos(gallery):
    rng = np.random.default_rng(4)
    people = unit(rng, 20)
    ids = [
        add(gallery.store, f"person-{i}", f"p{i}", face(v)).subject_id for i, v in enumerate(people)
    ]
    for subject_id, v in zip(ids, people, strict=True):
        assert top1(gallery, near(v, rng)) == subject_id


def test_deleting_an_image_recomputes_the_template_and_leaves_no_orphans(gallery):
    rng = np.random.default_rng(5)
    a, b = unit(rng, 2)
    first = add(gallery.store, "alice", "p1", face(a, masked_vector=unit(rng)))
    add(gallery.store, first.subject_id, "p2", face(b))
    assert gallery.store.delete_image(first.image_id)
    kept = template(gallery, first.subject_id)
    assert kept.face_count == 1
    np.testing.assert_allclose(np.frombuffer(kept.vector, "<f4"), b, atol=1e-6)
    assert template(gallery, first.subject_id, TemplateKind.MASKED) is None
    assert (count(gallery, Image), count(gallery, Face), count(gallery, Embedding)) == (1, 1, 1)
    np.testing.assert_allclose(
        gallery.index.index().vectors([first.subject_id])[0][0], b, atol=1e-6
    )
    assert len(gallery.index.index(TemplateKind.MASKED)) == 0
    assert not gallery.store.delete_image(first.image_id)  # already gone: nothing to do
    assert audited(gallery) == [
        ("delete_image", "image", str(first.image_id), {"subject_id": first.subject_id})
    ]


def test_deleting_the_last_face_removes_the_template_from_database_and_index(gallery):
    v = unit(np.random.default_rng(6))
    result = add(gallery.store, "alice", "p1", face(v))
    assert gallery.store.delete_face(result.face_ids[0])
    assert template(gallery, result.subject_id) is None
    assert count(gallery, Embedding) == 0
    assert len(gallery.index.index()) == 0
    assert count(gallery, Subject) == 1  # the subject stays: more photos may come
    assert audited(gallery) == [
        ("delete_face", "face", str(result.face_ids[0]), {"subject_id": result.subject_id})
    ]


def test_deleting_a_subject_removes_all_its_rows_and_its_index_entries(gallery):
    rng = np.random.default_rng(7)
    alice = add(gallery.store, "alice", "p1", face(unit(rng), masked_vector=unit(rng))).subject_id
    add(gallery.store, alice, "p2", face(unit(rng)))
    bob_vector = unit(rng)
    bob = add(gallery.store, "bob", "p3", face(bob_vector)).subject_id
    assert gallery.store.delete_subject(alice)
    assert count(gallery, Subject) == 1
    assert (count(gallery, Image), count(gallery, Face), count(gallery, Embedding)) == (1, 1, 1)
    assert count(gallery, Template) == 1
    assert gallery.index.index().ids().tolist() == [bob]
    assert top1(gallery, bob_vector) == bob
    with gallery.store.sessions() as session:
        entry = session.scalars(select(AuditEntry)).one()  # the deletion is on record
    assert (entry.action, entry.target_id, entry.details["name"]) == (
        "delete_subject",
        str(alice),
        "alice",
    )


def test_a_deleted_subject_id_is_never_reused(gallery):
    rng = np.random.default_rng(8)
    first = add(gallery.store, "alice", "p1", face(unit(rng))).subject_id
    gallery.store.delete_subject(first)
    second = add(gallery.store, "bob", "p2", face(unit(rng))).subject_id
    assert second != first


def test_a_wrong_vector_shape_is_refused_and_stores_nothing(gallery):
    with pytest.raises(ValueError, match="shape"):
        add(gallery.store, "alice", "p1", face(np.ones(DIM + 1, np.float32)))
    assert count(gallery, Image) == count(gallery, Subject) == 0


def test_bad_photo_bytes_are_reported_not_raised_and_store_nothing(gallery, enroller):
    result = enroller.enrol("alice", b"definitely not an image")
    assert result.status == ItemStatus.UNREADABLE and result.reason
    empty = enroller.enrol("alice", b"")
    assert empty.status == ItemStatus.UNREADABLE
    missing = enroller.enrol("alice", "/nonexistent/photo.jpg")
    assert missing.status == ItemStatus.UNREADABLE and "cannot read" in missing.reason
    assert count(gallery, Image) == count(gallery, Subject) == 0


def test_an_oversized_file_is_refused_before_it_is_read(gallery, enroller, tmp_path):
    limit = Settings.from_env({"CQAFACE_MAX_PHOTO_BYTES": "1000"})
    enroller = Enroller(enroller.store, enroller.encoder, settings=limit, keep="none")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 1001)
    result = enroller.enrol("alice", big)
    assert result.status == ItemStatus.TOO_LARGE and "1001 bytes" in result.reason
    assert enroller.enrol("alice", b"\xff" * 1001).status == ItemStatus.TOO_LARGE
    assert count(gallery, Image) == count(gallery, Subject) == 0


def test_the_index_reopened_from_disk_reflects_the_database(gallery, database_url, tmp_path):
    rng = np.random.default_rng(9)
    people = unit(rng, 5)
    ids = [
        add(gallery.store, f"p{i}", f"photo{i}", face(v)).subject_id for i, v in enumerate(people)
    ]
    gallery.index.save()
    again = live(gallery.store.engine, tmp_path / "index")
    assert again.index.open()[TemplateKind.NORMAL].how == "loaded"
    assert again.index.index().ids().tolist() == sorted(ids)
    # A change the file does not know about (another process enrolled): rebuilt from the DB.
    extra = add(gallery.store, "late", "photo-late", face(unit(rng))).subject_id
    third = live(gallery.store.engine, tmp_path / "index")
    opened = third.index.open()[TemplateKind.NORMAL]
    assert opened.how.startswith("rebuilt") and "stale" in opened.how
    assert extra in third.index.index().ids().tolist()


def test_a_corrupt_index_file_is_rebuilt_from_the_database(gallery, tmp_path):
    rng = np.random.default_rng(10)
    subject = add(gallery.store, "alice", "p1", face(unit(rng))).subject_id
    [path, *_] = gallery.index.save()
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte deep in the FAISS payload
    path.write_bytes(bytes(data))
    again = live(gallery.store.engine, tmp_path / "index")
    opened = again.index.open()[TemplateKind.NORMAL]
    assert "corrupt" in opened.how
    assert again.index.index().ids().tolist() == [subject]
    path.write_bytes(b"garbage")
    third = live(gallery.store.engine, tmp_path / "index")
    assert third.index.open()[TemplateKind.NORMAL].how.startswith("rebuilt")


def test_searches_run_correctly_while_enrolment_writes(gallery):
    rng = np.random.default_rng(11)
    known = unit(rng, 10)
    known_ids = [
        add(gallery.store, f"k{i}", f"k{i}", face(v)).subject_id for i, v in enumerate(known)
    ]
    errors: list[BaseException] = []
    wrong: list[tuple[int, int]] = []
    done = threading.Event()
    searches = [0]

    def search() -> None:
        try:
            while not done.is_set():
                for subject_id, v in zip(known_ids, known, strict=True):
                    got = top1(gallery, v)
                    searches[0] += 1
                    if got != subject_id:
                        wrong.append((subject_id, got))
                time.sleep(0.001)  # as requests do: leave the enrolling thread some GIL
        except BaseException as error:  # surfaced below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        newcomers = unit(rng, 40)
        new_ids = [
            add(gallery.store, f"n{i}", f"n{i}", face(v)).subject_id
            for i, v in enumerate(newcomers)
        ]
        for subject_id in new_ids[::2]:
            gallery.store.delete_subject(subject_id)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors and not wrong
    assert searches[0] > 0
    assert len(gallery.index.index()) == len(known) + 20
    assert count(gallery, Subject) == len(known) + 20


def test_a_folder_of_bad_photos_reports_every_photo(enroller, tmp_path):
    root = tmp_path / "photos"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "alice" / "empty.png").write_bytes(b"")
    (root / "alice" / "notes.txt").write_text("not a photo: skipped")
    results = enroller.enrol_many([(name, path, None) for name, path in photos_by_subject(root)])
    assert [(r.source.rsplit("/", 1)[-1], r.status) for r in results] == [
        ("broken.jpg", ItemStatus.UNREADABLE),
        ("empty.png", ItemStatus.UNREADABLE),
    ]
    with pytest.raises(NotADirectoryError):
        list(photos_by_subject(tmp_path / "missing"))


def test_subject_ids_are_looked_up_by_name_and_external_id(gallery):
    v = unit(np.random.default_rng(12))
    result = add(gallery.store, "alice", "p1", face(v))
    assert gallery.store.names([result.subject_id]) == {result.subject_id: "alice"}
    assert add(gallery.store, "alice", "p2", face(v)).subject_id == result.subject_id
    with pytest.raises(LookupError):
        add(gallery.store, 999_999, sha("p3"), face(v))


def test_refresh_picks_up_what_another_process_wrote(gallery, tmp_path):
    rng = np.random.default_rng(13)
    mine = add(gallery.store, "alice", "p1", face(unit(rng))).subject_id
    other = live(gallery.store.engine, tmp_path / "other")
    bob_vector, carol_vector = unit(rng, 2)
    bob = add(other.store, "bob", "p2", face(bob_vector)).subject_id
    carol = add(other.store, "carol", "p3", face(carol_vector)).subject_id
    other.store.delete_subject(mine)
    assert gallery.index.index().ids().tolist() == [mine]  # not seen yet
    assert gallery.index.refresh() == 3
    assert gallery.index.index().ids().tolist() == sorted([bob, carol])
    assert top1(gallery, near(carol_vector, rng)) == carol
    assert gallery.index.refresh() == 0  # nothing new


def test_a_saved_index_holds_what_its_checksum_claims_even_after_foreign_writes(gallery, tmp_path):
    rng = np.random.default_rng(14)
    add(gallery.store, "alice", "p1", face(unit(rng)))
    other = live(gallery.store.engine, tmp_path / "other")
    late = add(other.store, "late", "p2", face(unit(rng))).subject_id
    gallery.index.save()  # refreshes first: the file holds the late subject too
    again = live(gallery.store.engine, tmp_path / "index")
    assert again.index.open()[TemplateKind.NORMAL].how == "loaded"
    assert late in again.index.index().ids().tolist()


def test_concurrent_enrolments_of_one_subject_all_count_in_its_template(gallery):
    rng = np.random.default_rng(15)
    vectors = unit(rng, 24)
    subject = add(gallery.store, "alice", "first", face(vectors[0])).subject_id
    errors: list[BaseException] = []

    def enrol(part: int) -> None:
        try:
            for i in range(1 + part, 24, 4):
                result = add(gallery.store, subject, f"photo-{i}", face(vectors[i]))
                assert result.status == ItemStatus.ENROLLED
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=enrol, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    kept = template(gallery, subject)
    assert kept.face_count == 24
    np.testing.assert_allclose(
        np.frombuffer(kept.vector, "<f4"), normalise(vectors.mean(0)), atol=1e-5
    )
    np.testing.assert_allclose(
        gallery.index.index().vectors([subject])[0][0], normalise(vectors.mean(0)), atol=1e-5
    )


def test_a_batch_is_stored_at_once_with_its_duplicates_reported(gallery):
    from identify.gallery.store import PhotoRecord

    rng = np.random.default_rng(16)
    a, b, c = unit(rng, 3)
    before = add(gallery.store, "alice", "p0", face(a))

    def photo(subject, tag, vector):
        return PhotoRecord(subject, sha(tag), 100, [face(vector)], source=tag)

    results = gallery.store.add_images(
        [
            photo("alice", "p1", near(a, rng)),
            photo("bob", "p2", b),
            photo("carol", "p1", c),  # the same content as the first: a duplicate
            photo("bob", "p0", b),  # enrolled before, for alice
            photo(before.subject_id, "p3", near(a, rng)),
        ]
    )
    assert [r.status for r in results] == [
        ItemStatus.ENROLLED,
        ItemStatus.ENROLLED,
        ItemStatus.DUPLICATE,
        ItemStatus.DUPLICATE,
        ItemStatus.ENROLLED,
    ]
    assert results[2].image_id == results[0].image_id
    assert results[3].image_id == before.image_id
    assert {results[0].subject_id, results[4].subject_id} == {before.subject_id}
    assert gallery.store.names([results[1].subject_id]) == {results[1].subject_id: "bob"}
    assert count(gallery, Subject) == 2 and count(gallery, Image) == 4
    assert template(gallery, before.subject_id).face_count == 3
    assert sorted(gallery.index.index().ids().tolist()) == sorted(
        {before.subject_id, results[1].subject_id}
    )


def test_two_writers_enrolling_one_new_name_at_once_make_one_subject(
    gallery, database_url, monkeypatch
):
    """Two workers whose chunks hold photos of the same new person must not each create it."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite galleries have one writing process (the embedded mode)")
    from identify.gallery import subject_templates

    held, release = threading.Event(), threading.Event()
    add_vectors = subject_templates.add_vectors

    def slow_first_writer(*args, **kwargs):
        if threading.current_thread().name == "first":
            held.set()  # the subject is created, its transaction still open
            release.wait(10)
        return add_vectors(*args, **kwargs)

    monkeypatch.setattr(subject_templates, "add_vectors", slow_first_writer)
    rng = np.random.default_rng(17)
    results = {}

    def enrol(tag: str) -> None:
        results[tag] = add(gallery.store, "zed", tag, face(unit(rng)))

    first = threading.Thread(target=enrol, args=("a",), name="first")
    second = threading.Thread(target=enrol, args=("b",), name="second")
    first.start()
    assert held.wait(10)
    second.start()
    second.join(0.5)
    assert second.is_alive(), "the second writer did not wait for the first"
    release.set()
    first.join(10)
    second.join(10)
    assert results["a"].subject_id == results["b"].subject_id
    assert count(gallery, Subject) == 1
    assert template(gallery, results["a"].subject_id).face_count == 2
