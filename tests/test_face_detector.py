"""A gallery records which detector made each face: the model embeds that detector's crops, so
a change of CQAFACE_DETECTOR must show in the gallery (migration 0006 and enrolment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, inspect, select, text

from embedder import settings as embedder_settings
from embedder.config import ModelConfig
from embedder.inference import Embedder
from embedder.model import build_model
from embedder.mtcnn import default_detector
from embedder.scaled import ScaledDetector
from embedder.scrfd import SCRFD
from identify.gallery import migrate
from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.store import GalleryStore
from identify.gallery.tables import Face, ItemStatus
from identify.search.encode import FaceEncoder

# One face as revision 0005 stored it (no detector column), with its image and subject.
ROWS_BEFORE_0006 = (
    "INSERT INTO subjects (id, name, details, created_at, updated_at)"
    " VALUES (1, 'ada', '{}', :now, :now)",
    "INSERT INTO images (id, subject_id, sha256, size_bytes, status, created_at)"
    " VALUES (1, 1, 'x', 1, 'enrolled', :now)",
    "INSERT INTO faces (id, image_id, box, landmarks, detection_score, masked, part_qualities,"
    " created_at) VALUES (1, 1, '[]', '[]', 1.0, 0, '[]', :now)",
)


def test_faces_stored_before_the_revision_are_marked_mtcnn_and_the_way_back_drops_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    migrate.upgrade(url, "0005_blob_storage")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in ROWS_BEFORE_0006:
                connection.execute(text(statement), {"now": "2026-12-04 00:00:00"})
        migrate.upgrade(url)
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT detector FROM faces")) == "mtcnn"
        migrate.downgrade("0005_blob_storage", url)
        assert "detector" not in {c["name"] for c in inspect(engine).get_columns("faces")}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    torch.manual_seed(0)
    return Embedder(build_model(ModelConfig()).eval(), version="random-0", device="cpu")


def _scrfd() -> ScaledDetector:
    path = embedder_settings.scrfd_model()
    if not path.is_file():
        pytest.skip(f"SCRFD model not found at {path} (set CQAFACE_SHARED_MODELS)")
    return ScaledDetector(SCRFD(path), 1_000_000)


@pytest.mark.parametrize("name", ["mtcnn", "scrfd"])
def test_an_enrolled_face_records_its_detector(
    name: str, embedder: Embedder, celeba_photos_dir: Path, tmp_path: Path
) -> None:
    detector = default_detector() if name == "mtcnn" else _scrfd()
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    encoder = FaceEncoder(embedder, detector=detector)
    store = GalleryStore(engine, model_version=encoder.model_version, dim=512)
    enroller = Enroller(store, encoder, keep="none", masked_templates=False)
    photo = sorted(celeba_photos_dir.glob("*/*.jpg"))[0].read_bytes()
    try:
        assert enroller.enrol("ada", photo, source_name="ada.jpg").status == ItemStatus.ENROLLED
        with engine.connect() as connection:
            assert connection.scalars(select(Face.detector)).all() == [name]
    finally:
        engine.dispose()
