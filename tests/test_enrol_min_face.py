"""The gallery's own minimum face (CQAFACE_ENROL_MIN_FACE_SIZE): a gallery face smaller than it
is refused with its size and the setting named, and nothing is stored; probes keep
CQAFACE_MIN_FACE_SIZE. Enrolment skips the pyramid levels finer than its minimum needs and
keeps the others as they are, so a face found both ways has the same landmarks."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sqlalchemy import func, select

from embedder.config import ModelConfig
from embedder.errors import FaceTooSmall
from embedder.imageio import load_image
from embedder.inference import Embedder
from embedder.model import build_model
from embedder.mtcnn import MTCNN, _from_level_for, _pyramid, default_detector
from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.store import GalleryStore
from identify.gallery.tables import Image, ItemStatus
from identify.search.encode import FaceEncoder
from identify.settings import Settings


@pytest.fixture(scope="module")
def photo(celeba_photos_dir: Path) -> np.ndarray:
    return load_image(sorted(celeba_photos_dir.glob("*/*.jpg"))[0])


@pytest.fixture(scope="module")
def small_face(photo: np.ndarray) -> np.ndarray:
    """The photo shrunk to 64 px on a grey canvas: a face of 20-40 px."""
    canvas = np.full((300, 300, 3), 120, np.uint8)
    canvas[100:164, 100:164] = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
    return canvas


@pytest.fixture(scope="module")
def encoder() -> FaceEncoder:
    torch.manual_seed(0)
    model = build_model(ModelConfig()).eval()
    embedder = Embedder(model, version="random-0", device="cpu")
    return FaceEncoder(embedder, detector=default_detector())


def sized(encoder: FaceEncoder, **env: str) -> FaceEncoder:
    """``encoder`` with the face sizes of the given CQAFACE_* settings (the others default)."""
    settings = Settings.from_env(env)
    return FaceEncoder(
        encoder.embedder,
        detector=encoder.detector,
        min_face_size=settings.min_face_size,
        enrol_min_face_size=settings.enrol_min_face_size,
    )


def test_the_enrolment_minimum_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).enrol_min_face_size == 40
    assert Settings.from_env({"CQAFACE_ENROL_MIN_FACE_SIZE": "64"}).enrol_min_face_size == 64
    with pytest.raises(ValueError, match="CQAFACE_ENROL_MIN_FACE_SIZE='big' is not a int"):
        Settings.from_env({"CQAFACE_ENROL_MIN_FACE_SIZE": "big"})


def test_a_larger_minimum_starts_the_same_pyramid_at_a_coarser_level() -> None:
    scales = _pyramid(200, 180, 20, 0.709)
    smallest_face = [12 / s for s in scales]  # 20, 28.2, 39.8, 56.1, ... px
    assert _from_level_for(scales, 20) == scales
    assert _from_level_for(scales, 12) == scales  # below the pyramid's own: all of it
    assert _from_level_for(scales, 39) == scales[1:]
    assert _from_level_for(scales, 40) == scales[2:]
    assert smallest_face[2] <= 40 < smallest_face[3]


def test_enrolment_runs_p_net_on_the_coarser_levels_only(photo: np.ndarray) -> None:
    sizes: dict[str, list[tuple[int, int]]] = {"all": [], "from 40": []}
    nets = default_detector().networks

    def recording(key: str) -> MTCNN:
        def pnet(pixels: np.ndarray) -> tuple[np.ndarray, ...]:
            sizes[key].append(pixels.shape[1:3])
            return nets.pnet(pixels)

        return MTCNN(networks=nets._replace(pnet=pnet))

    everything = recording("all").detect(photo)
    skipping = recording("from 40").detect(photo, min_face_size=40)
    assert sizes["from 40"] == sizes["all"][2:]
    assert [(f.box, f.score) for f in skipping] == [(f.box, f.score) for f in everything]
    np.testing.assert_array_equal(skipping[0].landmarks, everything[0].landmarks)


def test_a_gallery_face_below_the_enrolment_minimum_is_refused_with_its_size(
    encoder: FaceEncoder, small_face: np.ndarray
) -> None:
    [probe] = encoder.faces(small_face, "all")  # a probe may be this small
    size = min(probe.box[2] - probe.box[0], probe.box[3] - probe.box[1])
    assert 20 <= size < 40
    with pytest.raises(FaceTooSmall) as caught:
        encoder.faces(small_face, "largest", gallery=True)
    assert str(caught.value) == (
        f"the largest face is {size:.0f} px, below the minimum of 40 px"
        " (CQAFACE_ENROL_MIN_FACE_SIZE)"
    )
    lenient = sized(encoder, CQAFACE_ENROL_MIN_FACE_SIZE="20")
    [face] = lenient.faces(small_face, "largest", gallery=True)
    assert face.box == probe.box


def test_a_probe_below_the_probe_minimum_names_its_own_setting(
    encoder: FaceEncoder, small_face: np.ndarray
) -> None:
    encoder = sized(encoder, CQAFACE_MIN_FACE_SIZE="50")
    with pytest.raises(FaceTooSmall, match=r"below the minimum of 50 px \(CQAFACE_MIN_FACE_SIZE\)"):
        encoder.faces(small_face, "all")
    with pytest.raises(FaceTooSmall, match=r"below the minimum of 50 px \(CQAFACE_MIN_FACE_SIZE\)"):
        encoder.faces(small_face, "largest", gallery=True)  # the larger of the two applies


def test_the_gallery_refuses_a_small_face_and_stores_nothing(
    encoder: FaceEncoder, small_face: np.ndarray, tmp_path: Path
) -> None:
    from identify.gallery import migrate

    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    store = GalleryStore.for_encoder(engine, encoder)
    gallery = Enroller(store, encoder, keep="none", masked_templates=False)
    buffer = io.BytesIO()
    PILImage.fromarray(small_face).save(buffer, format="PNG")
    refused = gallery.enrol("ada", buffer.getvalue(), source_name="small.png")
    assert refused.status == ItemStatus.NO_FACE
    assert refused.reason.endswith("below the minimum of 40 px (CQAFACE_ENROL_MIN_FACE_SIZE)")
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 0
    lenient = sized(encoder, CQAFACE_ENROL_MIN_FACE_SIZE="20")
    gallery = Enroller(store, lenient, keep="none", masked_templates=False)
    assert gallery.enrol("ada", buffer.getvalue()).status == ItemStatus.ENROLLED
    engine.dispose()


def test_a_bystander_below_the_enrolment_minimum_does_not_make_a_group_photo(
    encoder: FaceEncoder, photo: np.ndarray
) -> None:
    canvas = np.full((photo.shape[0], photo.shape[1] + 120, 3), 120, np.uint8)
    canvas[:, : photo.shape[1]] = photo
    canvas[20:84, -100:-36] = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
    big, small = encoder.faces(canvas, "all")  # as a probe: both faces
    assert small.box[0] > photo.shape[1] and min(np.subtract(small.box[2:], small.box[:2])) < 40
    [enrolled] = encoder.faces(canvas, "single", gallery=True)  # only faces of 40 px count
    assert enrolled.box == big.box
