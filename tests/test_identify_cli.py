"""`cqaface gallery add`, `identify`, `index rebuild` and `reembed` on real photos, with a real
(randomly initialised) model: the JSON contract and the exit statuses, not accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fits import Y1_FIT

from embedder import checkpoint as ckpt
from embedder.config import ModelConfig
from embedder.model import build_model
from embedder.quality import METADATA_KEY
from identify.cli.main import main


def _random_checkpoint(path: Path, seed: int) -> Path:
    """A random model with y1's quality fit, so that its answers carry a face quality."""
    torch.manual_seed(seed)
    metadata = {METADATA_KEY: Y1_FIT.to_metadata()}
    return ckpt.save(ckpt.from_model(build_model(ModelConfig()).eval(), metadata), path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Two different random-weight checkpoints: embeddings are meaningless, paths are real."""
    root = tmp_path_factory.mktemp("models")
    return _random_checkpoint(root / "a.pt", 0), _random_checkpoint(root / "b.pt", 1)


@pytest.fixture
def env(tmp_path, monkeypatch, models):
    monkeypatch.setenv("CQAFACE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CQAFACE_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("CQAFACE_MODEL", str(models[0]))
    monkeypatch.setenv("CQAFACE_DEVICE", "cpu")
    for name in ("CQAFACE_THRESHOLD", "CQAFACE_MASKED_THRESHOLD", "CQAFACE_FAR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def photos(celeba_photos_dir) -> dict[str, list[Path]]:
    people = sorted(p for p in celeba_photos_dir.iterdir() if p.is_dir())[:2]
    return {p.name: sorted(p.glob("*.jpg"))[:2] for p in people}


def run(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.strip()]


def enrol_two_people(capsys, photos) -> dict[str, int]:
    assert main(["db", "upgrade"]) == 0
    ids = {}
    for name, paths in photos.items():
        code, [line] = run(capsys, "gallery", "add", name, str(paths[0]))
        assert code == 0 and line["status"] == "enrolled", line
        ids[name] = line["subject_id"]
    return ids


def test_identify_prints_one_json_line_per_face_with_matches_and_a_decision(
    env, capsys, photos, monkeypatch
):
    ids = enrol_two_people(capsys, photos)
    probe = next(iter(photos.values()))[1]
    monkeypatch.setenv("CQAFACE_THRESHOLD", "-1")  # everything is above: a subject is answered
    code, [line] = run(capsys, "identify", str(probe), "--k", "2", "--mask", "no")
    assert code == 0
    assert {"path", "box", "masked", "matches", "decision", "face_quality"} <= set(line)
    assert line["path"] == str(probe) and len(line["box"]) == 4 and line["masked"] is False
    assert {m["subject_id"] for m in line["matches"]} == set(ids.values())
    assert [m["name"] for m in line["matches"]] == [
        {v: k for k, v in ids.items()}[m["subject_id"]] for m in line["matches"]
    ]
    scores = [m["score"] for m in line["matches"]]
    assert scores == sorted(scores, reverse=True)
    assert line["decision"] == {**line["matches"][0], "threshold": -1.0}
    monkeypatch.setenv("CQAFACE_THRESHOLD", "1.01")  # nothing reaches it: unknown
    _, [line] = run(capsys, "identify", str(probe), "--k", "1", "--mask", "no")
    assert line["decision"] == "unknown" and len(line["matches"]) == 1


def test_bad_photos_get_an_error_line_and_fail_the_command_only_when_nothing_was_searched(
    env, capsys, photos, tmp_path, monkeypatch
):
    enrol_two_people(capsys, photos)
    monkeypatch.setenv("CQAFACE_THRESHOLD", "0.5")
    monkeypatch.setenv("CQAFACE_MASKED_THRESHOLD", "0.4")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    code, [line] = run(capsys, "identify", str(bad))
    assert code == 1
    assert line["path"] == str(bad) and line["error"]["code"] == "not_an_image"
    assert line["error"]["message"]
    good = next(iter(photos.values()))[1]
    code, lines = run(capsys, "identify", str(bad), str(tmp_path / "missing.jpg"), str(good))
    assert code == 0
    assert [x.get("error", {}).get("code") for x in lines[:2]] == [
        "not_an_image",
        "unreadable_file",
    ]
    assert lines[2]["path"] == str(good) and "matches" in lines[2]


def test_an_uncalibrated_model_without_override_is_a_clear_error(env, capsys, photos):
    enrol_two_people(capsys, photos)
    probe = next(iter(photos.values()))[1]
    assert main(["identify", str(probe)]) == 2
    assert "CQAFACE_THRESHOLD" in capsys.readouterr().err


def test_the_same_photo_added_twice_is_reported_duplicate(env, capsys, photos):
    enrol_two_people(capsys, photos)
    name, paths = next(iter(photos.items()))
    code, [line] = run(capsys, "gallery", "add", name, str(paths[0]))
    assert code == 0 and line["status"] == "duplicate"


def test_commands_refuse_a_database_that_was_never_migrated(env, capsys, photos):
    name, paths = next(iter(photos.items()))
    assert main(["gallery", "add", name, str(paths[0])]) == 2
    assert "cqaface db upgrade" in capsys.readouterr().err


def test_index_rebuild_and_reembed_for_a_new_model(env, capsys, photos, models, monkeypatch):
    enrol_two_people(capsys, photos)
    code, lines = run(capsys, "index", "rebuild")
    assert code == 0
    assert {x["kind"]: x["templates"] for x in lines} == {"normal": 2, "masked": 2}
    code, [report] = run(capsys, "reembed", "--model", str(models[1]))
    assert code == 0 and report["embedded"] == 2 and report["skipped"] == 0
    assert report["model_version"] != ckpt.load(models[0]).version
    assert all(Path(p).is_file() for p in report["indexes"].values())
    # The new model serves from the finished index; a second run has nothing left to do.
    monkeypatch.setenv("CQAFACE_MODEL", str(models[1]))
    monkeypatch.setenv("CQAFACE_THRESHOLD", "-1")
    probe = next(iter(photos.values()))[1]
    code, [line] = run(capsys, "identify", str(probe), "--mask", "no")
    assert code == 0 and len(line["matches"]) == 2
    _, [again] = run(capsys, "reembed")
    assert again["embedded"] == 0


def test_verify_and_remove_and_list_subjects(env, capsys, photos, monkeypatch):
    ids = enrol_two_people(capsys, photos)
    monkeypatch.setenv("CQAFACE_THRESHOLD", "-1")
    name, paths = next(iter(photos.items()))
    code, [line] = run(capsys, "verify", str(paths[1]), str(ids[name]), "--mask", "no")
    assert code == 0
    assert set(line) == {
        "path",
        "subject_id",
        "score",
        "threshold",
        "masked",
        "same",
        "face_quality",
    }
    assert 0 <= line["face_quality"] <= 1
    assert line["same"] is True and line["threshold"] == -1.0
    code, listed = run(capsys, "gallery", "subjects")
    assert [(x["name"], x["images"]) for x in listed] == [(n, 1) for n in photos]
    code, [line] = run(capsys, "gallery", "remove", "--subject", str(ids[name]))
    assert code == 0 and line == {"deleted": "subject", "id": ids[name]}
    _, listed = run(capsys, "gallery", "subjects")
    assert [x["subject_id"] for x in listed] == [i for n, i in ids.items() if n != name]
    assert main(["gallery", "remove", "--image", "999"]) == 2
    assert "no image with id 999" in capsys.readouterr().err
    assert main(["verify", str(paths[1]), str(ids[name]), "--mask", "no"]) == 2
