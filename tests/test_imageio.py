"""Loading photos: every odd or hostile input gives RGB pixels or a typed error, never a crash."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from embedder.errors import (
    EmptyFile,
    FaceInputError,
    ImageTooLarge,
    NotAnImage,
    UnreadableImage,
)
from embedder.imageio import load_image


@pytest.fixture(scope="module")
def photo_path(celeba_photos_dir: Path) -> Path:
    return sorted(celeba_photos_dir.glob("*/*.jpg"))[0]


@pytest.fixture(scope="module")
def photo(photo_path: Path) -> np.ndarray:
    return np.asarray(Image.open(photo_path).convert("RGB"))


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _forged_png(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG that declares width x height 8-bit RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _assert_rgb(pixels: np.ndarray, height: int, width: int) -> None:
    assert pixels.shape == (height, width, 3)
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous


def test_a_jpeg_loads_from_bytes_or_path_as_the_same_rgb_pixels(
    photo_path: Path, photo: np.ndarray
) -> None:
    from_path = load_image(photo_path)
    _assert_rgb(from_path, *photo.shape[:2])
    assert np.array_equal(from_path, photo)
    assert np.array_equal(load_image(photo_path.read_bytes()), photo)
    assert np.array_equal(load_image(str(photo_path)), photo)


def test_zero_bytes_are_an_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EmptyFile) as caught:
        load_image(b"")
    assert caught.value.code == "empty_file"
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(EmptyFile):
        load_image(tmp_path / "empty.jpg")


def test_a_text_file_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("Dear team,\nthe photo is attached.\n")
    with pytest.raises(NotAnImage) as caught:
        load_image(tmp_path / "notes.jpg")
    assert caught.value.code == "not_an_image"


def test_random_bytes_are_not_an_image() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    with pytest.raises(NotAnImage):
        load_image(noise)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_file_is_unreadable(photo: np.ndarray, fmt: str) -> None:
    data = _encode(Image.fromarray(photo), fmt)
    with pytest.raises(UnreadableImage) as caught:
        load_image(data[: len(data) // 2])
    assert caught.value.code == "unreadable_image"


def test_a_huge_png_header_is_refused_at_once_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image))
    with pytest.raises(ImageTooLarge) as caught:
        load_image(_forged_png(50_000, 50_000))  # decoding 2.5 gigapixels would take minutes
    assert caught.value.code == "image_too_large"
    assert decoded == []  # refused from the header alone


def test_pillow_decompression_bomb_checks_apply_even_under_a_loose_pixel_limit() -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    # 100 Mpx: Pillow's warning level; 400 Mpx: its error level.
    for side in (10_000, 20_000):
        with pytest.raises(ImageTooLarge):
            load_image(_forged_png(side, side), max_pixels=10**10)
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters_before


def test_pixel_and_byte_limits_are_the_callers(photo: np.ndarray) -> None:
    data = _encode(Image.fromarray(photo), "PNG")
    with pytest.raises(ImageTooLarge, match="pixels"):
        load_image(data, max_pixels=photo.shape[0] * photo.shape[1] - 1)
    with pytest.raises(ImageTooLarge, match="bytes"):
        load_image(data, max_bytes=len(data) - 1)
    _assert_rgb(load_image(data, max_bytes=None), *photo.shape[:2])


def test_a_grey_photo_becomes_three_equal_channels(orl_dir: Path) -> None:
    pixels = load_image(orl_dir / "s1" / "1.pgm")
    _assert_rgb(pixels, 112, 92)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    assert np.array_equal(pixels[..., 0], np.asarray(Image.open(orl_dir / "s1" / "1.pgm")))


def test_transparency_is_composited_on_white(photo: np.ndarray) -> None:
    alpha = np.zeros(photo.shape[:2], np.uint8)
    alpha[:, photo.shape[1] // 2 :] = 255  # left half transparent, right half opaque
    rgba = Image.fromarray(np.dstack([photo, alpha]), "RGBA")
    pixels = load_image(_encode(rgba, "PNG"))
    half = photo.shape[1] // 2
    assert (pixels[:, :half] == 255).all()
    assert np.array_equal(pixels[:, half:], photo[:, half:])


def test_a_palette_image_with_a_transparent_colour_is_composited_on_white() -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.putpixel((0, 0), 0)
    pixels = load_image(_encode(palette, "PNG", transparency=0))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[1, 1]) == (200, 30, 30)


def test_16_bit_grey_is_scaled_over_its_full_range_not_clipped(photo: np.ndarray) -> None:
    grey8 = np.asarray(Image.fromarray(photo).convert("L"))
    grey16 = grey8.astype(np.uint16) * 257  # 0..255 -> 0..65535
    for fmt in ("PNG", "TIFF", "PPM"):  # Pillow opens these as I;16, I;16 and I
        pixels = load_image(_encode(Image.fromarray(grey16), fmt))
        _assert_rgb(pixels, *grey8.shape)
        assert np.array_equal(pixels[..., 1], grey8), fmt


def test_a_cmyk_jpeg_becomes_rgb(photo: np.ndarray) -> None:
    cmyk = Image.fromarray(photo).convert("CMYK")
    pixels = load_image(_encode(cmyk, "JPEG", quality=95))
    _assert_rgb(pixels, *photo.shape[:2])
    assert np.abs(pixels.astype(int) - photo).mean() < 4


def test_a_1_bit_image_becomes_black_and_white() -> None:
    bits = Image.fromarray(np.eye(8, dtype=bool))
    pixels = load_image(_encode(bits, "PNG"))
    assert np.array_equal(pixels[..., 0], np.eye(8, dtype=np.uint8) * 255)


def test_exif_orientation_is_applied(photo: np.ndarray) -> None:
    stored = Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90)  # as a sideways camera
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    pixels = load_image(_encode(stored, "PNG", exif=exif))
    assert np.array_equal(pixels, photo)


def test_an_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixels = load_image(data)
    assert tuple(pixels[8, 8]) == (250, 0, 0)


def test_the_reference_webp_crops_load(celeba_aligned_dir: Path) -> None:
    crop = load_image(sorted(celeba_aligned_dir.glob("00001/*.webp"))[0])
    _assert_rgb(crop, 112, 112)


def test_every_input_error_is_a_value_error_with_a_stable_code() -> None:
    for error in (EmptyFile, NotAnImage, UnreadableImage, ImageTooLarge):
        assert issubclass(error, FaceInputError)
        assert issubclass(error, ValueError)
        assert error.code and error.code != FaceInputError.code
