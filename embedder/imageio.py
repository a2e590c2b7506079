"""Decode untrusted photo bytes into RGB pixels, refusing bad input with typed errors only.

Everything here assumes hostile input: sizes are checked from the header before any pixel is
decoded, only common photo formats are parsed (no Ghostscript-backed EPS, no exotic
scientific formats), and every decoder failure surfaces as a :class:`FaceInputError`.

Transparency is composited over white rather than dropped: the colour stored under fully
transparent pixels is arbitrary (often black), whereas cut-out portraits are authored to be
seen on a light page.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedder.errors import EmptyFile, ImageTooLarge, NotAnImage, UnreadableImage

# MPO is how Pillow opens many phone JPEGs; PPM covers PGM/PBM.
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "BMP", "PPM", "AVIF")
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_UINT16_MAX = 65535
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the photo a quarter
_DCT_REDUCTIONS = (8, 4, 2)  # what libjpeg can decode at directly
MAX_PIXELS = 40_000_000
MAX_BYTES = 50 * 2**20


@dataclass(frozen=True, eq=False)
class Photo:
    """Decoded pixels, possibly at a reduced size, and the size of the photo they show."""

    pixels: np.ndarray  # HxWx3 uint8 RGB, upright
    size: tuple[int, int]  # the photo's own width and height, upright

    @property
    def scale(self) -> tuple[float, float]:
        """Decoded pixels per photo pixel along x and y (1.0 for a full decode)."""
        return self.pixels.shape[1] / self.size[0], self.pixels.shape[0] / self.size[1]


def load_image(
    source: bytes | str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = MAX_BYTES,
) -> np.ndarray:
    """Decode ``source`` (raw bytes or a file path) to a contiguous HxWx3 uint8 RGB array.

    EXIF orientation is applied and multi-frame images give their first frame. Raises only
    :class:`FaceInputError` subclasses for bad content; a path that cannot be opened raises
    the usual ``OSError``, since that is the caller's mistake, not the photo's.
    """
    return load_photo(source, max_pixels=max_pixels, max_bytes=max_bytes).pixels


def load_photo(
    source: bytes | str | os.PathLike[str],
    *,
    keep_pixels: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = MAX_BYTES,
) -> Photo:
    """:func:`load_image`, but a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size.

    libjpeg scales in its DCT, so a 12 MP photo needed at 1 MP is never decoded in full only
    to be shrunk: the largest reduction that still leaves ``keep_pixels`` pixels is used
    (None: a full decode). Other formats are always decoded in full.
    """
    data = _read_bytes(source, max_bytes)
    image = _open(data, max_pixels)
    try:
        size = _upright_size(image)
        if keep_pixels is not None:
            _reduce(image, keep_pixels)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # camera orientation: upright faces
        pixels = _to_rgb(image)
    except Exception as error:
        # Pillow's decoders raise a zoo of types (OSError, SyntaxError, ValueError,
        # struct.error, zlib.error, ...) for truncated or corrupt data.
        raise UnreadableImage(f"the image is truncated or corrupt ({error})") from error
    return Photo(np.ascontiguousarray(pixels), size)


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The photo's width and height once its EXIF orientation is applied."""
    width, height = image.size
    orientation = image.getexif().get(0x0112)
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def _reduce(image: Image.Image, keep_pixels: int) -> None:
    """Ask the JPEG decoder for the largest DCT reduction that keeps ``keep_pixels``."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = image.size
    for factor in _DCT_REDUCTIONS:
        fits = min(width, height) >= factor  # a side shorter than the factor cannot shrink
        if fits and -(-width // factor) * -(-height // factor) >= keep_pixels:
            # Pillow picks the largest reduction whose result is at least the size asked.
            image.draft(image.mode, (width // factor, height // factor))
            return


def _read_bytes(source: bytes | str | os.PathLike[str], max_bytes: int | None) -> bytes:
    """The raw bytes, with the byte limit checked before a file is read."""
    in_memory = isinstance(source, bytes | bytearray)
    size = len(source) if in_memory else os.stat(source).st_size
    if size == 0:
        raise EmptyFile("the file is empty (zero bytes)")
    if max_bytes is not None and size > max_bytes:
        raise ImageTooLarge(f"the file has {size:,} bytes, over the limit of {max_bytes:,}")
    return bytes(source) if in_memory else Path(source).read_bytes()


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse only the header and refuse images too large to decode safely."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_known_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLarge(f"the image has too many pixels ({error})") from error
    except UnidentifiedImageError as error:
        raise NotAnImage("the file is not an image in a format we read") from error
    except Exception as error:
        raise UnreadableImage(f"the image header is corrupt ({error})") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,}"
        )
    if width == 0 or height == 0:
        raise UnreadableImage(f"the image has no pixels ({width}x{height})")
    return image


def _known_formats() -> list[str]:
    Image.init()
    return [name for name in FORMATS if name in Image.OPEN]


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        return _grey16_to_rgb(np.asarray(image))
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    if mode in _ALPHA_MODES:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _grey16_to_rgb(values: np.ndarray) -> np.ndarray:
    """Map 16-bit grey onto 0..255 over the type's full range (Pillow widens 16-bit PGM/PNG
    to mode "I" with values 0..65535, so that range holds for "I" too)."""
    scaled = np.rint(values.astype(np.float32) * (255.0 / _UINT16_MAX))
    grey = np.clip(scaled, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)
