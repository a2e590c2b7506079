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
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedder.errors import EmptyFile, ImageTooLarge, NotAnImage, UnreadableImage

# MPO is how Pillow opens many phone JPEGs; PPM covers PGM/PBM.
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "BMP", "PPM", "AVIF")
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_UINT16_MAX = 65535


def load_image(
    source: bytes | str | os.PathLike[str],
    *,
    max_pixels: int = 40_000_000,
    max_bytes: int | None = 50 * 2**20,
) -> np.ndarray:
    """Decode ``source`` (raw bytes or a file path) to a contiguous HxWx3 uint8 RGB array.

    EXIF orientation is applied and multi-frame images give their first frame. Raises only
    :class:`FaceInputError` subclasses for bad content; a path that cannot be opened raises
    the usual ``OSError``, since that is the caller's mistake, not the photo's.
    """
    data = _read_bytes(source, max_bytes)
    image = _open(data, max_pixels)
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # camera orientation: upright faces
        pixels = _to_rgb(image)
    except Exception as error:
        # Pillow's decoders raise a zoo of types (OSError, SyntaxError, ValueError,
        # struct.error, zlib.error, ...) for truncated or corrupt data.
        raise UnreadableImage(f"the image is truncated or corrupt ({error})") from error
    return np.ascontiguousarray(pixels)


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
