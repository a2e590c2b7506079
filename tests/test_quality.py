"""The face quality score (embedder.quality) and the enrolment gate on it, on real photos and
the shipped model: a blurred copy of a photo scores lower than the photo; every answer carries
the score; a gallery face under the minimum (CQAFACE_ENROL_MIN_QUALITY, or a job's own) is
refused `low_quality` with both numbers in the reason while the job's other photos enrol."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from quality_gate import blurred, face_quality_of, minimum_between
from sqlalchemy import func, select

from embedder import quality
from embedder.imageio import load_image
from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.jobs import create_job, run_job
from identify.gallery.store import GalleryStore
from identify.gallery.tables import Face, ItemStatus, JobItem
from identify.search.encode import FaceEncoder
from identify.settings import Settings

REASON = re.compile(r"face quality (0\.\d{4}) is under the minimum (0\.\d+) to enrol")


@pytest.fixture(scope="module")
def shipped() -> FaceEncoder:
    """The shipped model: its checkpoint carries the quality fit made for its outputs."""
    return FaceEncoder.load()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sharpness_falls_when_a_real_crop_is_blurred(celeba_aligned_dir: Path) -> None:
    crop = np.asarray(PILImage.open(sorted(celeba_aligned_dir.glob("*/*.webp"))[0]).convert("RGB"))
    sharp = quality.sharpness(crop)
    assert sharp > quality.sharpness(blurred(crop, 1.0)) > quality.sharpness(blurred(crop, 3.0))


def test_a_blurred_copy_of_a_real_photo_scores_lower_than_the_photo(
    shipped: FaceEncoder, celeba_photos_dir: Path, orl_dir: Path
) -> None:
    for path in (sorted(celeba_photos_dir.glob("*/*.jpg"))[0], orl_dir / "s1" / "1.pgm"):
        photo = load_image(path)
        original = face_quality_of(shipped, photo)
        assert 0 <= face_quality_of(shipped, blurred(photo, 4.0)) < original <= 1, path


def test_the_score_lies_in_zero_to_one_for_real_faces(shipped: FaceEncoder, orl_dir: Path) -> None:
    photos = [load_image(orl_dir / f"s{n}" / "1.pgm") for n in range(1, 11)]
    faces = [shipped.faces(p, "largest")[0] for p in photos]
    scores = [e.face_quality for e in shipped.encode(faces, "no")]
    assert all(isinstance(s, float) and 0 <= s <= 1 for s in scores)


def test_the_minimum_is_a_setting_and_a_bad_value_names_it() -> None:
    assert Settings.from_env({"CQAFACE_ENROL_MIN_QUALITY": "0.35"}).enrol_min_quality == 0.35
    for bad in ("1.5", "-0.1", "high", "nan"):
        with pytest.raises(ValueError, match="CQAFACE_ENROL_MIN_QUALITY"):
            Settings.from_env({"CQAFACE_ENROL_MIN_QUALITY": bad})


@pytest.fixture
def folder(orl_dir: Path, tmp_path: Path) -> Path:
    """Two ORL people with two photos each, and a heavily blurred copy of s1 photo 1."""
    root = tmp_path / "photos"
    for person in ("s1", "s2"):
        (root / person).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(orl_dir / person / f"{k}.pgm", root / person / f"{k}.pgm")
    (root / "s1" / "blurred.png").write_bytes(
        png(blurred(load_image(orl_dir / "s1" / "1.pgm"), 4.0))
    )
    return root


@pytest.fixture(scope="module")
def minimum(shipped: FaceEncoder, orl_dir: Path) -> float:
    """A minimum between the blurred copy's score and the four sharp photos' lowest, as the
    shipped model scores them: the gate must refuse exactly the faces under it."""
    sharp = [load_image(orl_dir / p / f"{k}.pgm") for p in ("s1", "s2") for k in (1, 2)]
    return minimum_between(shipped, sharp, blurred(load_image(orl_dir / "s1" / "1.pgm"), 4.0))


def _enroller(url: str, encoder: FaceEncoder, tmp_path: Path, **env: str) -> Enroller:
    from identify.gallery import migrate

    if url.startswith("sqlite"):
        migrate.upgrade(url)
    store = GalleryStore.for_encoder(make_engine(url), encoder)
    settings = Settings.from_env({"CQAFACE_DATA_DIR": str(tmp_path / "data"), **env})
    return Enroller(store, encoder, settings=settings, keep="none", masked_templates=False)


def test_a_job_refuses_a_face_under_the_minimum_and_enrols_the_rest(
    database_url: str, shipped: FaceEncoder, folder: Path, tmp_path: Path, minimum: float
) -> None:
    enroller = _enroller(database_url, shipped, tmp_path, CQAFACE_ENROL_MIN_QUALITY=str(minimum))
    job_id = create_job(enroller.store, folder)
    progress = run_job(enroller, job_id, save_indexes=lambda: None)
    assert progress.counts == {"enrolled": 4, "low_quality": 1}
    [refused] = progress.failed
    assert refused["status"] == "low_quality" and refused["path"].endswith("blurred.png")
    score, stated = REASON.fullmatch(refused["reason"]).groups()
    assert float(score) < float(stated) == minimum
    with enroller.store.sessions() as session:
        stored = session.scalars(select(Face.quality)).all()
        item = session.scalars(select(JobItem).where(JobItem.path.endswith("blurred.png"))).one()
    assert len(stored) == 4 and all(minimum <= q <= 1 for q in stored)
    assert item.status == ItemStatus.LOW_QUALITY and item.image_id is None
    enroller.store.engine.dispose()


def test_a_jobs_own_minimum_overrides_the_setting(
    database_url: str, shipped: FaceEncoder, folder: Path, tmp_path: Path, minimum: float
) -> None:
    enroller = _enroller(database_url, shipped, tmp_path, CQAFACE_ENROL_MIN_QUALITY=str(minimum))
    job_id = create_job(enroller.store, folder, options={"min_quality": 0.0})
    assert run_job(enroller, job_id, save_indexes=lambda: None).counts == {"enrolled": 5}
    enroller.store.engine.dispose()


def test_a_single_photo_under_the_minimum_stores_nothing(
    shipped: FaceEncoder, orl_dir: Path, tmp_path: Path, minimum: float
) -> None:
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    enroller = _enroller(url, shipped, tmp_path)
    photo = png(blurred(load_image(orl_dir / "s1" / "1.pgm"), 4.0))
    refused = enroller.enrol("ada", photo, source_name="blurred.png", min_quality=minimum)
    assert refused.status == ItemStatus.LOW_QUALITY and REASON.fullmatch(refused.reason)
    assert refused.status.http == (422, "low_quality")
    with enroller.store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Face)) == 0
    assert enroller.enrol("ada", photo, min_quality=0.0).status == ItemStatus.ENROLLED
    enroller.store.engine.dispose()
