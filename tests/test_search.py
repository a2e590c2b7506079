"""Search: top-k subjects with cosine scores, an open-set answer ("unknown" is one), its own
threshold for masked probes, and verification of a probe against one subject."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import add, face, live, near, unit

from embedder.faces import Face
from identify.gallery.db import make_engine
from identify.search.encode import EncodedFace
from identify.search.searcher import Searcher
from identify.search.thresholds import ThresholdError, threshold
from identify.settings import Settings

CALIBRATION = {
    "thresholds": {
        "normal": {"0.01": 0.30, "0.001": 0.40},
        "masked": {"0.01": 0.20, "0.001": 0.25},
    }
}


@pytest.fixture
def people(database_url, tmp_path):
    """A gallery of 30 people, each with a normal and a (synthetic) masked template."""
    engine = make_engine(database_url)
    gallery = live(engine, tmp_path)
    rng = np.random.default_rng(0)
    vectors, masked = unit(rng, 30), unit(rng, 30)
    ids = [
        add(gallery.store, f"person-{i}", f"p{i}", face(v, masked_vector=m)).subject_id
        for i, (v, m) in enumerate(zip(vectors, masked, strict=True))
    ]
    yield gallery, ids, vectors, masked
    engine.dispose()


def test_a_known_face_gets_its_subject_as_the_answer_with_top_k_candidates(people):
    gallery, ids, vectors, _ = people
    searcher = Searcher(None, gallery.index, gallery.store, metadata=CALIBRATION)
    probe = near(vectors[4], np.random.default_rng(1), noise=0.4)
    [(best, score), *rest] = searcher.scores(probe[None], np.array([False]), k=5)[0]
    assert best == ids[4] and len(rest) == 4
    assert score == pytest.approx(float(probe @ vectors[4]), abs=1e-5)
    assert score > 0.4 and score >= rest[0][1]


def test_a_stranger_is_answered_unknown_but_still_gets_candidates(people):
    gallery, ids, _, _ = people
    searcher = Searcher(None, gallery.index, gallery.store, metadata=CALIBRATION)
    stranger = unit(np.random.default_rng(2))
    dummy = Face(
        box=(0.0, 0.0, 1.0, 1.0),
        score=1.0,
        landmarks=np.zeros((5, 2), np.float32),
        crop=np.zeros((112, 112, 3), np.uint8),
        matrix=np.zeros((2, 3)),
    )
    known = near(people[2][3], np.random.default_rng(3), noise=0.4)
    faces = [
        EncodedFace(dummy, stranger, np.zeros(4), masked=False, mask_probability=0.1),
        EncodedFace(dummy, known, np.zeros(4), masked=False, mask_probability=0.1),
    ]
    unknown, found = searcher.identify_encoded(faces, k=3)
    record = unknown.to_json("probe.jpg")
    assert record["decision"] == "unknown"
    assert len(record["matches"]) == 3
    assert set(record["matches"][0]) == {"subject_id", "name", "score"}
    assert record["matches"][0]["score"] < 0.40  # below the FAR 1e-3 threshold
    decision = found.to_json()["decision"]
    assert decision["subject_id"] == ids[3] and decision["name"] == "person-3"
    assert decision["threshold"] == 0.40


def test_masked_probes_are_judged_against_the_masked_threshold(people):
    gallery, _, _, _ = people
    searcher = Searcher(None, gallery.index, gallery.store, metadata=CALIBRATION)
    assert searcher.threshold(masked=False) == 0.40
    assert searcher.threshold(masked=True) == 0.25
    assert (
        Searcher(None, gallery.index, gallery.store, metadata=CALIBRATION, far=0.01).threshold(
            masked=True
        )
        == 0.20
    )
    at_far = Settings.from_env({"CQAFACE_FAR": "0.01"})
    searcher = Searcher(None, gallery.index, gallery.store, metadata=CALIBRATION, settings=at_far)
    assert searcher.threshold(masked=False) == 0.30


def test_masked_templates_rank_a_masked_probe_by_the_fusion_policy(people):
    gallery, ids, vectors, masked = people
    rng = np.random.default_rng(4)
    # A masked probe of person 7: close to her masked template, far from her normal one.
    probe = near(masked[7], rng, noise=0.3)
    flags = np.array([True])
    normal_only = Searcher(
        None, gallery.index, gallery.store, metadata=CALIBRATION, fusion="normal"
    )
    fused = Searcher(None, gallery.index, gallery.store, metadata=CALIBRATION, fusion="mean")
    against_masked = Searcher(
        None, gallery.index, gallery.store, metadata=CALIBRATION, fusion="masked"
    )
    assert against_masked.scores(probe[None], flags, 1)[0][0][0] == ids[7]
    assert fused.scores(probe[None], flags, 1)[0][0][0] == ids[7]
    mean_score = fused.scores(probe[None], flags, 1)[0][0][1]
    expected = (probe @ vectors[7] + probe @ masked[7]) / 2
    assert mean_score == pytest.approx(float(expected), abs=1e-5)
    normal_scores = dict(normal_only.scores(probe[None], flags, 30)[0])
    assert normal_scores[ids[7]] == pytest.approx(float(probe @ vectors[7]), abs=1e-5)
    # Unmasked probes are never fused.
    assert fused.scores(vectors[3][None], np.array([False]), 1)[0][0][1] == pytest.approx(1.0)


def test_verify_says_same_for_the_subject_and_not_for_another(people):
    gallery, ids, vectors, _ = people
    searcher = Searcher(None, gallery.index, gallery.store, metadata=CALIBRATION)
    probe = near(vectors[5], np.random.default_rng(5), noise=0.4)
    same = searcher.verify_vector(probe, ids[5], masked=False)
    other = searcher.verify_vector(probe, ids[6], masked=False)
    assert same.same and not other.same
    assert same.to_json()["threshold"] == 0.40
    with pytest.raises(LookupError):
        searcher.verify_vector(probe, 123_456, masked=False)


def test_threshold_overrides_and_an_uncalibrated_model():
    with pytest.raises(ThresholdError, match="CQAFACE_THRESHOLD"):
        threshold({}, masked=False)
    with pytest.raises(ThresholdError, match=r"calibrated: 0\.001, 0\.01"):
        threshold(CALIBRATION, masked=False, far=1e-4)
    overridden = Settings.from_env({"CQAFACE_THRESHOLD": "0.5"})
    assert threshold({}, masked=False, settings=overridden) == 0.5
    both = Settings.from_env({"CQAFACE_THRESHOLD": "0.5", "CQAFACE_MASKED_THRESHOLD": "0.33"})
    assert threshold(CALIBRATION, masked=True, settings=both) == 0.33
    with pytest.raises(ValueError, match="CQAFACE_FAR"):
        Settings.from_env({"CQAFACE_FAR": "2"})


def test_an_unknown_fusion_policy_is_refused(people):
    with pytest.raises(ValueError, match="CQAFACE_MASK_FUSION"):
        Settings.from_env({"CQAFACE_MASK_FUSION": "median"})
    with pytest.raises(ValueError, match="fusion must be one of"):
        Searcher(None, people[0].index, people[0].store, metadata=CALIBRATION, fusion="median")
