"""Gallery hygiene on real photos: the report finds the planted faults of
tests/hygiene_gallery.py (a subject given five photos of another person, one person enrolled
under two names, a blurred copy of each person's first photo) and exactly the false alarms
stated here; merge, move, remove and undo leave the gallery as one enrolled clean from the
start (templates within 1e-5, the same identification answers); bad input and a concurrent
double merge are refused whole."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hygiene_gallery import (
    ALIAS_SUFFIX,
    MODEL,
    build,
    embedded,
    encoder,
    layout,
    people,
    probes,
    templates,
)
from sqlalchemy import func, select

from identify.gallery import hygiene
from identify.gallery.tables import AuditEntry, HygieneMerge, Image, Subject, TemplateKind
from identify.search.hygiene_report import FAR, run_report
from identify.search.live_index import LiveIndex
from identify.search.searcher import Decision, Match, Searcher
from identify.search.thresholds import threshold

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def root(celeba_photos_dir):
    embedded(celeba_photos_dir)  # once for the module: every gallery below reuses the vectors
    return celeba_photos_dir


@pytest.fixture(scope="module")
def names(root):
    return people(root)


def _threshold() -> float:
    return threshold(dict(encoder().embedder.metadata or {}), masked=False, far=FAR)


def _live(store, tmp_path) -> LiveIndex:
    """The index of a searching process on ``store``, following its writes."""
    live = LiveIndex(
        store.engine, model_version=store.model_version, dim=512, index_dir=tmp_path / "index"
    )
    live.open()
    store.on_commit.append(live.sync)
    return live


def _report(store, live) -> dict:
    report_id = hygiene.create_report(store, _threshold())
    assert run_report(store, live.index(TemplateKind.NORMAL), report_id)
    return hygiene.report_json(store, report_id)


def _labels(store) -> dict[int, str]:
    with store.sessions() as session:
        return dict(session.execute(select(Image.id, Image.source)).all())


def _answers(store, live, root) -> list[tuple[list[tuple[str, float]], str | None]]:
    """Top-3 (name, score) and the decision (a name or None) of every probe."""
    searcher = Searcher(None, live, store, metadata=dict(encoder().embedder.metadata or {}))
    shown = probes(root)
    rows = searcher.scores(
        np.stack([p.vector for p in shown]), np.array([p.masked for p in shown]), 3
    )
    named = store.names(i for row in rows for i, _ in row)
    answers = []
    for probe, row in zip(shown, rows, strict=True):
        matches = [Match(i, named[i], s) for i, s in row]
        decision = Decision.of(matches, searcher.threshold(probe.masked))
        answers.append(
            ([(m.name, m.score) for m in matches], decision.match and decision.match.name)
        )
    return answers


def _same_gallery(store, live, clean, clean_live, root) -> None:
    """``store`` holds the templates of ``clean`` within TOLERANCE and answers every probe
    alike: the same subjects, scores within TOLERANCE, the same decisions."""
    mine, theirs = templates(store), templates(clean)
    assert sorted(mine) == sorted(theirs)
    for name in mine:
        np.testing.assert_allclose(mine[name], theirs[name], atol=TOLERANCE)
    ours, expected = _answers(store, live, root), _answers(clean, clean_live, root)
    for (matches, decision), (want, want_decision) in zip(ours, expected, strict=True):
        assert decision == want_decision
        assert [n for n, _ in matches] == [n for n, _ in want]
        np.testing.assert_allclose([s for _, s in matches], [s for _, s in want], atol=TOLERANCE)


def _subject(store, name: str) -> int:
    with store.sessions() as session:
        return session.scalar(select(Subject.id).where(Subject.name == name))


def _faces_of(store, name: str, labels: set[str]) -> list[int]:
    from identify.gallery.tables import Face

    with store.sessions() as session:
        return list(
            session.scalars(
                select(Face.id)
                .join(Image, Face.image_id == Image.id)
                .join(Subject, Image.subject_id == Subject.id)
                .where(Subject.name == name, Image.source.in_(sorted(labels)))
                .order_by(Face.id)
            )
        )


# ----- the report ---------------------------------------------------------------------------


def test_the_report_finds_every_planted_fault_and_these_false_alarms(root, names, tmp_path):
    p0, p1, p2 = names[:3]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, foreign=p0, alias=True))
    report = _report(store, _live(store, tmp_path))
    assert report["status"] == "done"
    assert report["total"] == report["done"] == 11  # P0..P9 and the alias
    labels = _labels(store)
    outliers = {(o["subject_name"], labels[o["image_id"]]): o for o in report["outliers"]}
    foreign = {f"{p1}/{embedded(root)[(p1, n, False)].path.name}" for n in range(8, 13)}
    # Fault 1: all five photos of P1 under P0, each with P1 as the best other subject.
    for label in foreign:
        assert outliers[(p0, label)]["best_other"]["name"] == p1
    # Fault 2: the person under two names is a pair, far above the threshold.
    pairs = {(p["subject_a"]["name"], p["subject_b"]["name"]): p for p in report["same_person"]}
    assert pairs[(p2, p2 + ALIAS_SUFFIX)]["score"] > 0.9
    # Its faces are nearer the other name than their own without them: listed, with the pair.
    alias = {k: o for k, o in outliers.items() if k[0].startswith(p2)}
    assert len(alias) == 7 and all(o["with_pair"] for o in alias.values())
    assert {o["best_other"]["name"] for o in alias.values()} == {p2, p2 + ALIAS_SUFFIX}
    # What else is found, exactly: P0's template, pulled by the five foreign photos, pairs it
    # with P1 (the same fault seen from the subjects); one photo of 05252 that CelebA itself
    # mislabelled (another actress: a real fault of the data set, not a false alarm); and the
    # false alarms, 3 of the 10 blurred copies.
    assert set(pairs) == {(p2, p2 + ALIAS_SUFFIX), (p0, p1)}
    rest = sorted(label for (_, label) in set(outliers) - set(alias) if label not in foreign)
    assert rest == [
        "04998/182949.jpg blurred",
        "05061/183211.jpg blurred",
        "05206/183470.jpg blurred",
        "05252/186320.jpg",
    ]
    assert report["counts"] == {"outliers": 5 + 7 + 4, "same_person": 2}


def test_a_dismissed_pair_is_not_listed_again(root, names, tmp_path):
    p2 = names[2]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, alias=True))
    live = _live(store, tmp_path)
    a, b = _subject(store, p2), _subject(store, p2 + ALIAS_SUFFIX)
    first = _report(store, live)
    assert [
        (p["subject_a"]["subject_id"], p["subject_b"]["subject_id"]) for p in first["same_person"]
    ] == [(a, b)]
    assert hygiene.dismiss(store, b, a, actor=None).details["already"] is False
    assert hygiene.dismiss(store, a, b, actor=None).details["already"] is True
    assert hygiene.report_json(store, first["id"])["same_person"] == []
    assert _report(store, live)["same_person"] == []


def test_a_report_cut_short_resumes_where_it_stopped(root, names, tmp_path):
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, foreign=names[0], alias=True))
    live = _live(store, tmp_path)
    whole = _report(store, live)
    report_id = hygiene.create_report(store, _threshold())
    index = live.index(TemplateKind.NORMAL)

    class Killed(BaseException):  # like SIGKILL: nothing of the runner's own runs after it
        pass

    def die(_: int) -> None:
        raise Killed

    with pytest.raises(Killed):  # the process dies after its first chunk of 4 subjects
        run_report(store, index, report_id, chunk=4, on_chunk=die)
    cut = hygiene.report_json(store, report_id)
    assert (cut["status"], cut["done"]) == ("running", 4)
    assert hygiene.unfinished_report(store) == report_id  # what the next run picks up
    assert run_report(store, index, report_id, chunk=4)
    resumed = hygiene.report_json(store, report_id)
    assert resumed["done"] == 11
    for key in ("outliers", "same_person", "counts"):
        assert resumed[key] == whole[key]


# ----- actions against a gallery enrolled clean -----------------------------------------------


def test_moving_the_foreign_faces_equals_enrolling_them_where_they_belong(root, names, tmp_path):
    p0, p1 = names[:2]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, foreign=p0))
    live = _live(store, tmp_path)
    foreign = {
        o["face_id"]
        for o in _report(store, live)["outliers"]
        if o["subject_name"] == p0 and o["best_other"]["name"] == p1
    }
    assert len(foreign) == 5
    target = _subject(store, p1)
    for face_id in sorted(foreign):
        outcome = hygiene.move_face(store, face_id, target, actor=None)
        assert outcome.details["to"] == target
    clean = build(f"sqlite:///{tmp_path / 'c.db'}", layout(root, foreign=p1))
    _same_gallery(store, live, clean, _live(clean, tmp_path / "c"), root)
    left = [o for o in _report(store, live)["outliers"] if o["subject_name"] == p0]
    assert [o["best_other"]["name"] for o in left] == ["05218"]  # its blurred copy, as before


def test_removing_the_foreign_faces_equals_never_enrolling_them(root, names, tmp_path):
    p0 = names[0]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, foreign=p0))
    live = _live(store, tmp_path)
    foreign = [
        o["face_id"]
        for o in _report(store, live)["outliers"]
        if o["subject_name"] == p0 and o["best_other"]["name"] == names[1]
    ]
    assert len(foreign) == 5
    for face_id in foreign:
        assert hygiene.remove_face(store, face_id, actor=None).details["image_removed"]
    clean = build(f"sqlite:///{tmp_path / 'c.db'}", layout(root))
    _same_gallery(store, live, clean, _live(clean, tmp_path / "c"), root)


def test_merge_equals_one_name_from_the_start_and_undo_restores_the_two(root, names, tmp_path):
    p2 = names[2]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, alias=True))
    live = _live(store, tmp_path)
    before = _answers(store, live, root)
    split = templates(store)
    source, target = _subject(store, p2 + ALIAS_SUFFIX), _subject(store, p2)
    merged = hygiene.merge(store, source, target, actor=None)
    assert merged.details["images_moved"] == 4
    clean = build(f"sqlite:///{tmp_path / 'c.db'}", layout(root))
    _same_gallery(store, live, clean, _live(clean, tmp_path / "c"), root)

    undone = hygiene.undo_merge(store, merged.details["merge_id"], actor=None)
    assert undone.subjects == sorted([source, target])
    assert _subject(store, p2 + ALIAS_SUFFIX) == source  # back under its own id
    restored = templates(store)
    assert sorted(restored) == sorted(split)
    for name in split:
        np.testing.assert_allclose(restored[name], split[name], atol=TOLERANCE)
    after = _answers(store, live, root)
    assert [(m[0][0], d) for m, d in after] == [(m[0][0], d) for m, d in before]
    with pytest.raises(hygiene.Conflict, match="undone already"):
        hygiene.undo_merge(store, merged.details["merge_id"], actor=None)


def test_a_merge_cannot_be_undone_once_the_target_changed(root, names, tmp_path):
    p2, p3 = names[2], names[3]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, alias=True))
    source, target = _subject(store, p2 + ALIAS_SUFFIX), _subject(store, p2)
    merge_id = hygiene.merge(store, source, target, actor=None).details["merge_id"]
    [face] = _faces_of(store, p3, {f"{p3}/{embedded(root)[(p3, 1, False)].path.name}"})
    hygiene.move_face(store, face, target, actor=None)
    with pytest.raises(hygiene.Conflict, match="changed since"):
        hygiene.undo_merge(store, merge_id, actor=None)
    assert _subject(store, p2 + ALIAS_SUFFIX) is None


# ----- bad input ----------------------------------------------------------------------------


def _counts(store) -> tuple[int, int, int, int]:
    with store.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Subject)),
            session.scalar(select(func.count()).select_from(Image)),
            session.scalar(select(func.count()).select_from(HygieneMerge)),
            session.scalar(select(func.count()).select_from(AuditEntry)),
        )


def test_bad_input_is_refused_and_changes_nothing(root, names, tmp_path):
    p0, p1, p2 = names[:3]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, foreign=p0, alias=True))
    a, b, gone = _subject(store, p0), _subject(store, p1), _subject(store, p2)
    assert store.delete_subject(gone)
    [face] = _faces_of(store, p0, {f"{p0}/{embedded(root)[(p0, 1, False)].path.name}"})
    before = _counts(store)
    refusals = [
        (lambda: hygiene.merge(store, a, a), hygiene.Invalid, "into itself"),
        (lambda: hygiene.move_face(store, face, gone), hygiene.NotFound, f"no subject {gone}"),
        (lambda: hygiene.move_face(store, face, a), hygiene.Invalid, "already"),
        (lambda: hygiene.move_face(store, 10**6, b), hygiene.NotFound, "no face"),
        (lambda: hygiene.remove_face(store, 10**6), hygiene.NotFound, "no face"),
        (lambda: hygiene.merge(store, a, gone), hygiene.NotFound, f"no subject {gone}"),
        (lambda: hygiene.undo_merge(store, 10**6), hygiene.NotFound, "no merge"),
        (lambda: hygiene.dismiss(store, a, a), hygiene.Invalid, "two subjects"),
        (lambda: hygiene.dismiss(store, a, gone), hygiene.NotFound, f"no subject {gone}"),
    ]
    for call, error, words in refusals:
        with pytest.raises(error, match=words):
            call()
    assert _counts(store) == before
    hygiene.merge(store, a, b)
    with pytest.raises(hygiene.Conflict, match=f"subject {a} was merged into subject {b}"):
        hygiene.merge(store, a, b)
    with pytest.raises(hygiene.Conflict, match="merged"):
        hygiene.move_face(store, face, a)


def test_a_failure_mid_merge_leaves_database_and_index_as_they_were(
    root, names, tmp_path, monkeypatch
):
    from identify.gallery import subject_templates

    p2 = names[2]
    store = build(f"sqlite:///{tmp_path / 'g.db'}", layout(root, alias=True))
    live = _live(store, tmp_path)
    before, index_before = templates(store), live.index().ids().tolist()
    source, target = _subject(store, p2 + ALIAS_SUFFIX), _subject(store, p2)

    def crash(*args, **kwargs):
        raise RuntimeError("killed")  # after the photos moved and the source was deleted

    monkeypatch.setattr(subject_templates, "recompute", crash)
    with pytest.raises(RuntimeError):
        hygiene.merge(store, source, target)
    monkeypatch.undo()
    assert templates(store).keys() == before.keys()
    assert _subject(store, p2 + ALIAS_SUFFIX) == source
    assert live.index().ids().tolist() == index_before


def test_a_merge_by_another_process_reaches_the_index_by_refresh_and_on_reopen(
    root, names, tmp_path
):
    """The process that merged died before telling anyone: the searching process's refresh
    catches up, and its saved index file, now stale, is rebuilt when opened again."""
    p2 = names[2]
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = build(url, layout(root, alias=True))
    live = _live(store, tmp_path)
    live.save()
    from identify.gallery.db import make_engine
    from identify.gallery.store import GalleryStore

    other = GalleryStore(make_engine(url), model_version=store.model_version, dim=512)
    source, target = _subject(store, p2 + ALIAS_SUFFIX), _subject(store, p2)
    hygiene.merge(other, source, target)
    reopened = LiveIndex(
        store.engine, model_version=store.model_version, dim=512, index_dir=tmp_path / "index"
    )
    assert source not in reopened.index().ids().tolist()
    assert live.refresh() == 2
    assert source not in live.index().ids().tolist()
    vectors, present = live.index().vectors([target])
    assert present.all()
    np.testing.assert_allclose(vectors[0], templates(store)[p2], atol=TOLERANCE)


# ----- two admins at once (PostgreSQL) -------------------------------------------------------


@pytest.mark.parametrize("opposite", [False, True], ids=["same-way", "opposite-ways"])
def test_two_merges_of_one_pair_at_once_one_wins_the_other_is_refused_whole(
    root, names, tmp_path, postgres_database, opposite
):
    from identify.gallery.db import make_engine
    from identify.gallery.store import GalleryStore

    p2 = names[2]
    url = postgres_database()
    store = build(url, layout(root, alias=True))
    a, b = _subject(store, p2 + ALIAS_SUFFIX), _subject(store, p2)
    stores = [
        GalleryStore(make_engine(url), model_version=store.model_version, dim=512) for _ in range(2)
    ]
    jobs = [(a, b), (b, a) if opposite else (a, b)]
    start = threading.Barrier(2)
    results: list[object] = [None, None]

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = hygiene.merge(stores[i], *jobs[i], actor=None)
        except hygiene.HygieneError as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wins = [r for r in results if isinstance(r, hygiene.Outcome)]
    refusals = [r for r in results if isinstance(r, hygiene.Conflict)]
    assert (len(wins), len(refusals)) == (1, 1), results
    survivor = wins[0].details["target_id"]
    with store.sessions() as session:
        assert session.scalars(select(Subject.id).where(Subject.id.in_([a, b]))).all() == [survivor]
        assert session.scalar(select(func.count()).select_from(HygieneMerge)) == 1
        assert (
            session.scalar(select(func.count()).where(Image.subject_id == survivor)) == 9
        )  # P2's 8 photos and its blurred copy
    assert list(templates(store)).count(p2 if survivor == b else p2 + ALIAS_SUFFIX) == 1


# ----- the JSON API and the command line ------------------------------------------------------


def test_the_api_runs_a_report_and_its_actions_and_refuses_bad_input(
    root, names, tmp_path, monkeypatch
):
    from web_helpers import add_key, bearer, make_app

    monkeypatch.setenv("CQAFACE_MODEL", str(MODEL))
    from identify.web import hygiene as web_hygiene

    p0, p1, p2 = names[:3]
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = build(url, layout(root, foreign=p0, alias=True))
    app = make_app(url, tmp_path)
    key = add_key(app, "curator@x.org", "operator", "identify,enrol")
    client, auth = app.test_client(), bearer(key)

    started = client.post("/api/v1/hygiene/reports", headers=auth)
    assert started.status_code == 202
    report_id = started.get_json()["id"]
    web_hygiene.wait(report_id)
    report = client.get(f"/api/v1/hygiene/reports/{report_id}", headers=auth).get_json()
    assert (report["status"], report["counts"]) == ("done", {"outliers": 16, "same_person": 2})

    source, target = _subject(store, p2 + ALIAS_SUFFIX), _subject(store, p2)

    def post(path: str, body: dict | None = None):
        response = client.post(f"/api/v1/hygiene/{path}", json=body or {}, headers=auth)
        return response.status_code, response.get_json()

    status, body = post("merges", {"source_id": source, "target_id": source})
    assert (status, body["error"]["code"]) == (422, "invalid")
    status, body = post("merges", {"source_id": source, "target_id": 10**6})
    assert (status, body["error"]["message"]) == (404, f"no subject {10**6}")
    status, body = post("merges", {"source_id": source})
    assert (status, body["error"]["details"]) == (400, {"field": "target_id"})
    assert (
        client.post(
            "/api/v1/hygiene/merges",
            data="[1]",
            headers={**auth, "Content-Type": "application/json"},
        ).status_code
        == 400
    )

    status, merged = post("merges", {"source_id": source, "target_id": target})
    assert (status, merged["images_moved"]) == (201, 4)
    status, body = post("merges", {"source_id": source, "target_id": target})
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert body["error"]["details"] == {"subject_id": source, "merged_into": target}
    [face] = _faces_of(store, p0, {f"{p0}/{embedded(root)[(p0, 1, False)].path.name}"})
    status, body = post(f"faces/{face}/move", {"subject_id": source})
    assert (status, body["error"]["code"]) == (409, "conflict")  # moved to a merged subject
    after = client.get(f"/api/v1/hygiene/reports/{report_id}", headers=auth).get_json()
    assert after["counts"]["same_person"] == 1  # the merged pair is settled

    status, body = post(f"merges/{merged['merge_id']}/undo")
    assert (status, body["action"]) == (200, "undo_merge")
    assert post(f"merges/{merged['merge_id']}/undo")[0] == 409
    assert post("merges/999999/undo")[0] == 404
    a, b = _subject(store, p0), _subject(store, p1)
    assert post("dismissals", {"subject_a": a, "subject_b": b})[0] == 201
    assert post("dismissals", {"subject_a": b, "subject_b": a}) == (
        200,
        {"action": "dismiss", "subjects": [a, b], "subject_a": a, "subject_b": b, "already": True},
    )
    status, moved = post(f"faces/{face}/move", {"subject_id": b})
    assert (status, moved["from"], moved["to"]) == (200, a, b)
    assert post(f"faces/{face}/remove")[0] == 200
    assert post(f"faces/{face}/remove")[0] == 404

    with store.sessions() as session:
        audited = session.execute(
            select(AuditEntry.action, AuditEntry.user_id)
            .where(AuditEntry.action.like("hygiene_%"))
            .order_by(AuditEntry.id)
        ).all()
    user = audited[0].user_id
    assert user is not None
    assert audited == [
        (action, user)
        for action in (
            "hygiene_report",
            "hygiene_merge",
            "hygiene_undo_merge",
            "hygiene_dismiss",
            "hygiene_move_face",
            "hygiene_remove_face",
        )
    ]


def test_the_cli_merges_undoes_and_refuses_in_one_line(root, names, tmp_path, monkeypatch, capsys):
    import json

    from identify.cli.main import main

    p2 = names[2]
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = build(url, layout(root, alias=True))
    monkeypatch.setenv("CQAFACE_DATABASE_URL", url)
    monkeypatch.setenv("CQAFACE_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("CQAFACE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CQAFACE_MODEL", str(MODEL))
    for name in ("CQAFACE_THRESHOLD", "CQAFACE_FAR"):
        monkeypatch.delenv(name, raising=False)
    source, target = _subject(store, p2 + ALIAS_SUFFIX), _subject(store, p2)

    assert main(["gallery", "hygiene", "merge", str(source), str(source)]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        f"cqaface gallery hygiene: error: cannot merge subject {source} into itself\n",
    )
    assert main(["gallery", "hygiene", "report"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["counts"] == {"outliers": 7 + 4, "same_person": 1}
    [pair] = [x for x in lines if x.get("kind") == "same_person"]
    assert (pair["subject_a"]["subject_id"], pair["subject_b"]["subject_id"]) == (target, source)
    assert main(["gallery", "hygiene", "merge", str(source), str(target)]) == 0
    [merged] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert main(["gallery", "hygiene", "merge", str(source), str(target)]) == 1
    assert capsys.readouterr().err == (
        f"cqaface gallery hygiene: error: subject {source} was merged into subject {target}\n"
    )
    assert main(["gallery", "hygiene", "undo", str(merged["merge_id"])]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "undo_merge"
