"""`make demo`'s helpers: the gallery/probe split, and a login that is new on every run."""

from __future__ import annotations

import csv
import json

from identify.cli import demo


def test_each_person_keeps_one_photo_back_as_a_probe_and_a_stranger_is_added(orl_dir, tmp_path):
    demo.prepare(orl_dir, tmp_path, subjects=3)
    with (tmp_path / "gallery.csv").open() as listing:
        rows = list(csv.DictReader(listing))
    probes = (tmp_path / "probes.txt").read_text().split()
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert sorted({r["subject"] for r in rows}) == ["s1", "s10", "s11"]
    assert len(rows) == 3 * 9
    assert not {r["path"] for r in rows} & set(probes)  # no probe is in the gallery
    assert sorted(truth[p] for p in probes) == ["s1", "s10", "s11", "unknown"]


def test_the_demo_login_gets_a_new_random_password_each_run(tmp_path, capsys):
    from identify.gallery import migrate
    from identify.gallery.db import make_engine, session_factory
    from identify.web import auth

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    migrate.upgrade(url)
    passwords = []
    for _ in range(2):
        demo.login(url)
        passwords.append(capsys.readouterr().out.split()[-1])
    assert passwords[0] != passwords[1]
    with session_factory(make_engine(url))() as session:
        assert auth.check_login(session, demo.DEMO_EMAIL, passwords[1]) is not None
        assert auth.check_login(session, demo.DEMO_EMAIL, passwords[0]) is None
