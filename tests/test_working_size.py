"""Photos of any size: detection at a working size, JPEGs decoded only as large as needed, and
the extremes (banners, one pixel, 40 MP, CMYK, 16-bit, EXIF-rotated) answered, never a crash."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from embedder import faces as faces_module
from embedder import runtime
from embedder.align import similarity_transform, template
from embedder.errors import ImageTooLarge, NoFace
from embedder.faces import faces_from_file
from embedder.imageio import Photo, load_image, load_photo
from embedder.mtcnn import MTCNN, Detection, default_detector
from embedder.scaled import ScaledDetector
from identify.gallery.db import make_engine
from identify.gallery.enroller import Enroller
from identify.gallery.store import GalleryStore
from identify.gallery.tables import Image as GalleryImage
from identify.gallery.tables import ItemStatus
from identify.search.encode import FaceEncoder

# MTCNN's landmarks of one face seen at two scales differ by its own precision, not by an
# exact amount; 0.1 of the inter-ocular distance is the normalised mean error above which
# face-alignment benchmarks count a face as failed (300-W, WFLW: "failure rate at 0.1").
LANDMARK_NME = 0.1


def _jpeg(pixels: np.ndarray, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def _canvas(photo: np.ndarray, width: int, height: int, share: float = 0.6):
    """The photo scaled up to ``share`` of a width x height canvas whose background is the
    photo blown up and blurred (no second face): pixels, scale, top-left corner."""
    scale = share * height / photo.shape[0]
    pasted = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    blurred = cv2.GaussianBlur(photo, (0, 0), sigmaX=photo.shape[1] / 40)
    back = cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)
    top, left = (height - pasted.shape[0]) // 2, (width - pasted.shape[1]) // 2
    back[top : top + pasted.shape[0], left : left + pasted.shape[1]] = pasted
    return back, scale, np.array([left, top], np.float32)


@pytest.fixture(scope="module")
def photo(celeba_photos_dir: Path) -> np.ndarray:
    return load_image(sorted(celeba_photos_dir.glob("*/*.jpg"))[0])


@pytest.fixture(scope="module")
def reference(photo: np.ndarray) -> np.ndarray:
    """The photo's landmarks as MTCNN finds them on the photo itself."""
    return default_detector().detect(photo)[0].landmarks


@pytest.fixture(scope="module")
def detector() -> ScaledDetector:
    return ScaledDetector(default_detector(), 1_000_000)


def _nme(found: np.ndarray, expected: np.ndarray) -> float:
    ocular = np.linalg.norm(expected[1] - expected[0])
    return float(np.linalg.norm(found - expected, axis=1).mean() / ocular)


def test_a_large_jpeg_is_decoded_at_the_largest_dct_reduction_that_keeps_the_pixels_asked(
    photo: np.ndarray,
) -> None:
    data = _jpeg(_canvas(photo, 4032, 3024)[0])
    assert load_photo(data).pixels.shape == (3024, 4032, 3)
    assert load_photo(data, keep_pixels=1_000_000).pixels.shape == (1512, 2016, 3)
    assert load_photo(data, keep_pixels=100_000).pixels.shape == (378, 504, 3)
    assert load_photo(data, keep_pixels=4032 * 3024).pixels.shape == (3024, 4032, 3)
    reduced = load_photo(data, keep_pixels=1_000_000)
    assert reduced.size == (4032, 3024) and reduced.scale == (0.5, 0.5)
    png = io.BytesIO()
    Image.fromarray(_canvas(photo, 1600, 1200)[0]).save(png, "PNG")
    assert load_photo(png.getvalue(), keep_pixels=100_000).pixels.shape == (1200, 1600, 3)


def test_the_detector_sees_at_most_the_working_size_and_small_photos_untouched(
    photo: np.ndarray,
) -> None:
    seen: list[tuple[int, ...]] = []

    class Recording(MTCNN):
        def detect(self, image: np.ndarray, **kwargs: object) -> list:
            seen.append(image.shape)
            return super().detect(image, **kwargs)

    scaled = ScaledDetector(Recording(networks=default_detector().networks), 1_000_000)
    big = _canvas(photo, 4032, 3024)[0]
    assert len(scaled.detect(big)) == 1
    assert len(scaled.detect(photo)) == 1
    assert seen[0][0] * seen[0][1] <= 1_000_000 and seen[0][1] / seen[0][0] == pytest.approx(
        4 / 3, abs=1e-3
    )
    assert seen[1] == photo.shape


def test_a_face_in_a_12_mp_photo_is_found_where_the_original_photo_shows_it(
    photo: np.ndarray, reference: np.ndarray, detector: ScaledDetector
) -> None:
    pixels, scale, corner = _canvas(photo, 4032, 3024)
    faces = faces_from_file(_jpeg(pixels), detector=detector)
    assert len(faces) == 1
    assert _nme((faces[0].landmarks - corner) / scale, reference) < LANDMARK_NME


def test_the_alignment_matrix_maps_the_photos_own_pixels_whatever_the_decode(
    photo: np.ndarray, detector: ScaledDetector
) -> None:
    face = faces_from_file(_jpeg(_canvas(photo, 4032, 3024)[0]), detector=detector)[0]
    expected = similarity_transform(face.landmarks, template())
    np.testing.assert_allclose(face.matrix, expected, rtol=1e-5, atol=1e-4)


def test_a_face_smaller_than_the_crop_is_aligned_from_the_full_decode(
    photo: np.ndarray, detector: ScaledDetector
) -> None:
    # The pasted photo is 0.05 of 3024 px high: its face about 100 px, under the 112 px crop.
    data = _jpeg(_canvas(photo, 4032, 3024, share=0.05)[0])
    face = faces_from_file(data, detector=detector)[0]
    x1, y1, x2, y2 = face.box
    assert min(x2 - x1, y2 - y1) < 112
    full = load_image(data)
    expected = cv2.warpAffine(full, face.matrix, (112, 112), flags=cv2.INTER_LINEAR)
    assert np.array_equal(face.crop, expected)


def test_a_20000_by_100_banner_says_no_face(detector: ScaledDetector) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (100, 20_000, 3), dtype=np.uint8)
    with pytest.raises(NoFace):
        faces_from_file(_jpeg(cv2.GaussianBlur(noise, (0, 0), 3)), detector=detector)


def test_a_1_by_1_image_says_no_face(detector: ScaledDetector) -> None:
    out = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 150, 120)).save(out, "PNG")
    with pytest.raises(NoFace):
        faces_from_file(out.getvalue(), detector=detector)


def test_a_40_mp_photo_gives_its_face_and_a_larger_one_is_refused(
    photo: np.ndarray, reference: np.ndarray, detector: ScaledDetector
) -> None:
    pixels, scale, corner = _canvas(photo, 7296, 5472)  # 39.9 MP, under the 40 MP limit
    faces = faces_from_file(_jpeg(pixels), detector=detector)
    assert len(faces) == 1
    assert _nme((faces[0].landmarks - corner) / scale, reference) < LANDMARK_NME
    with pytest.raises(ImageTooLarge):
        faces_from_file(_jpeg(np.zeros((5480, 7300, 3), np.uint8)), detector=detector)


def test_a_cmyk_12_mp_jpeg_gives_its_face(
    photo: np.ndarray, reference: np.ndarray, detector: ScaledDetector
) -> None:
    pixels, scale, corner = _canvas(photo, 4032, 3024)
    out = io.BytesIO()
    Image.fromarray(pixels).convert("CMYK").save(out, "JPEG", quality=90)
    faces = faces_from_file(out.getvalue(), detector=detector)
    assert len(faces) == 1
    assert _nme((faces[0].landmarks - corner) / scale, reference) < LANDMARK_NME


def test_a_16_bit_grey_png_gives_its_face(photo: np.ndarray, detector: ScaledDetector) -> None:
    pixels, _, _ = _canvas(photo, 1600, 1200)
    grey16 = np.asarray(Image.fromarray(pixels).convert("L")).astype(np.uint16) * 257
    out = io.BytesIO()
    Image.fromarray(grey16).save(out, "PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")
    assert len(faces_from_file(out.getvalue(), detector=detector)) == 1


def test_an_exif_rotated_phone_photo_is_detected_upright_in_upright_pixels(
    photo: np.ndarray, reference: np.ndarray, detector: ScaledDetector
) -> None:
    pixels, scale, corner = _canvas(photo, 4032, 3024)
    stored = np.ascontiguousarray(np.rot90(pixels, k=1))  # the sensor's sideways pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    faces = faces_from_file(_jpeg(stored, exif=exif), detector=detector)
    assert len(faces) == 1
    assert _nme((faces[0].landmarks - corner) / scale, reference) < LANDMARK_NME


def test_the_serving_detector_works_at_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CQAFACE_DETECT_PIXELS", "250000")
    assert runtime.load_detector().working_pixels == 250_000
    for bad in ("99", "1e6", "x", "-5"):
        monkeypatch.setenv("CQAFACE_DETECT_PIXELS", bad)
        with pytest.raises(ValueError, match=f"CQAFACE_DETECT_PIXELS='{bad}': expected a number"):
            runtime.load_detector()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shape of every decode the face pipeline makes (the real decoder, recorded)."""
    shapes: list[tuple[int, ...]] = []

    def recording(*args: object, **kwargs: object) -> Photo:
        photo = load_photo(*args, **kwargs)
        shapes.append(photo.pixels.shape)
        return photo

    monkeypatch.setattr(faces_module, "load_photo", recording)
    return shapes


def test_the_serving_encoder_finds_a_12_mp_jpegs_face_in_a_half_size_decode(
    photo: np.ndarray, detector: ScaledDetector, decodes: list[tuple[int, ...]]
) -> None:
    data = _jpeg(_canvas(photo, 4032, 3024)[0])
    encoder = FaceEncoder(None, detector=detector)
    [full] = encoder.faces(load_image(data), "largest")  # the photo decoded in full
    decoded, [face] = encoder.read(data, "largest")
    # 1,000,000 working pixels: 1/2 is the largest DCT reduction that keeps them (1/4 leaves
    # 762,048), and the face, about 900 px there, needs no finer decode for a 112 px crop.
    assert decodes == [(1512, 2016, 3)]
    assert decoded.size == (4032, 3024) and decoded.scale == (0.5, 0.5)
    # The same face: no landmark further from the full decode's than one pixel of the
    # aligned crop, the finest step the model sees (the template's eye distance spans that
    # many crop pixels).
    crop_pixel = np.linalg.norm(full.landmarks[1] - full.landmarks[0]) / np.linalg.norm(
        template()[1] - template()[0]
    )
    assert np.linalg.norm(face.landmarks - full.landmarks, axis=1).max() <= crop_pixel


def test_an_enrolled_12_mp_jpeg_records_its_own_size_not_its_decodes(
    photo: np.ndarray,
    detector: ScaledDetector,
    decodes: list[tuple[int, ...]],
    database_url: str,
    encoder: FaceEncoder,
) -> None:
    encoder = FaceEncoder(encoder.embedder, detector=detector)
    dim = int(encoder.embedder.config.embedding_size)
    store = GalleryStore(make_engine(database_url), model_version=encoder.model_version, dim=dim)
    enroller = Enroller(store, encoder, keep="none", masked_templates=False)
    [result] = enroller.enrol_many([("a", _jpeg(_canvas(photo, 4032, 3024)[0]), "big.jpg")])
    assert result.status == ItemStatus.ENROLLED
    assert decodes == [(1512, 2016, 3)]
    with store.sessions() as session:
        assert session.execute(select(GalleryImage.width, GalleryImage.height)).one() == (
            4032,
            3024,
        )


def test_a_kept_12_mp_photo_is_realigned_from_the_decode_it_was_enrolled_from(
    photo: np.ndarray, detector: ScaledDetector, decodes: list[tuple[int, ...]]
) -> None:
    data = _jpeg(_canvas(photo, 4032, 3024)[0])
    encoder = FaceEncoder(None, detector=detector)
    _, [face] = encoder.read(data, "largest")
    again = encoder.realign(data, Detection(face.box, face.score, face.landmarks))
    assert decodes == [(1512, 2016, 3), (1512, 2016, 3)]
    assert np.array_equal(again.crop, face.crop)
