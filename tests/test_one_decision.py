"""One decision, three surfaces: the JSON API, the admin UI and the CLI answer a probe photo with
the same subject (or "unknown"), score and threshold, because all three render the answer of
one call (Searcher.search) on the shipped model and the same gallery."""

from __future__ import annotations

import io
import json
import re

import pytest
from web_helpers import add_key, add_user, bearer, make_app, sign_in

from identify.cli.main import main
from identify.gallery import migrate

ENROLLED = ("s1", "s2", "s3")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, orl_dir):
    """A SQLite gallery of photos 1-3 of three ORL people, enrolled by the CLI; the app that
    serves it, with an API key and an analyst. The CLI and the app share database and index."""
    tmp = tmp_path_factory.mktemp("one-decision")
    url = f"sqlite:///{tmp / 'gallery.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("CQAFACE_DATABASE_URL", url)
    patch.setenv("CQAFACE_INDEX_DIR", str(tmp / "index"))
    patch.setenv("CQAFACE_DATA_DIR", str(tmp / "data"))
    for name in ("CQAFACE_MODEL", "CQAFACE_THRESHOLD", "CQAFACE_MASKED_THRESHOLD", "CQAFACE_FAR"):
        patch.delenv(name, raising=False)
    migrate.upgrade(url)
    for name in ENROLLED:
        photos = [str(orl_dir / name / f"{i}.pgm") for i in (1, 2, 3)]
        assert main(["gallery", "add", name, *photos]) == 0
    app = make_app(url, tmp)
    key = add_key(app, "program@x.org", "analyst", "identify")
    add_user(app, "ana@x.org", "analyst")
    yield app, key
    patch.undo()


def _api(app, key: str, photo) -> dict:
    response = app.test_client().post(
        "/api/v1/identify",
        data={"image": (io.BytesIO(photo.read_bytes()), photo.name)},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.get_json()
    [face] = response.get_json()["faces"]
    return face


def _cli(capsys, photo) -> dict:
    capsys.readouterr()
    assert main(["identify", str(photo)]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    return line


def _ui(app, photo) -> str:
    """The admin UI's Rank-1 line for the probe's one face, its markup stripped."""
    client, token = sign_in(app, "ana@x.org")
    response = client.post(
        "/search",
        data={
            "image": (io.BytesIO(photo.read_bytes()), photo.name),
            "mask": "auto",
            "k": "5",
            "csrf_token": token,
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    page = response.get_data(as_text=True)
    assert 'id="rank1-2"' not in page  # one face
    rank1 = re.search(r'<div class="rank1 [^"]*" id="rank1-1">(.*?)</div>', page, re.S).group(1)
    return " ".join(re.sub(r"<[^>]+>", " ", rank1).split())


# The UI prints 3 decimals of the exact score, the API and the CLI 5: they agree to half a unit
# of the one plus half a unit of the other.
SHOWN = 0.0005 + 0.000005


def _shown(ui: str) -> tuple[str, str, float, float]:
    """(known or unknown, name, score, threshold) from the UI's Rank-1 line."""
    unknown = re.fullmatch(r"unknown \(best (\S+) below threshold (\S+)\)", ui)
    if unknown:
        return "unknown", "", float(unknown.group(1)), float(unknown.group(2))
    known = re.fullmatch(r"Rank-1: (.+) score (\S+) ≥ threshold (\S+)", ui)
    assert known, ui
    return "known", known.group(1), float(known.group(2)), float(known.group(3))


@pytest.mark.parametrize(
    ("person", "photo"),
    [("s2", "1.pgm"), ("s2", "7.pgm"), ("s9", "7.pgm")],
    ids=["an-enrolled-photo", "a-held-back-photo", "a-stranger"],
)
def test_the_api_the_admin_ui_and_the_cli_give_the_same_decision(
    gallery, orl_dir, capsys, person, photo
):
    app, key = gallery
    probe = orl_dir / person / photo
    api, cli, ui = _api(app, key, probe), _cli(capsys, probe), _ui(app, probe)
    # The API and the CLI render the same answer: the same decision, candidates and scores.
    assert api["decision"] == cli["decision"]
    assert api["matches"] == cli["matches"]
    assert api["part_qualities"] == cli["quality"] and api["box"] == cli["box"]
    assert api["face_quality"] == cli["face_quality"] and 0 <= cli["face_quality"] <= 1
    # The admin UI shows the same decision: known or not, whom, at which score and threshold.
    decision = api["decision"]
    kind, name, score, threshold = _shown(ui)
    assert kind == ("unknown" if decision == "unknown" else "known")
    assert name == ("" if decision == "unknown" else decision["name"])
    assert score == pytest.approx(api["matches"][0]["score"], abs=SHOWN)
    assert threshold == pytest.approx(api["threshold"], abs=SHOWN)
    if decision != "unknown":
        assert decision["threshold"] == api["threshold"]
    if photo == "1.pgm":  # a photo of the gallery: its own subject, whatever the calibration
        assert decision != "unknown" and decision["name"] == person
