"""Synthetic face masks drawn on aligned 112x112 crops, for masked-face augmentation and for the
M2N / M2M / MLFW evaluations.

Each mask is laid out in a face frame built from the 5 landmarks: u runs from -1 to 1 across
the lower face (about 1.1 eye distances either side of the nose) and v from 0 at the nose
bridge (below the eyes) to 1 at the chin. A style is an outline in that frame plus a shading
function of (u, v): pleats, a centre seam, a cup's dome, a fabric texture. Geometry is jittered
a little per call, the colour follows the face's lighting, and the edges are anti-aliased with
a soft contact shadow, so that a model cannot learn a flat-polygon shortcut. Drawing costs a
few tenths of a millisecond (cv2 fills plus a few array operations on the mask's rows only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from embedder.align import REFERENCE_112

STYLES: tuple[str, ...] = ("surgical", "kn95", "n95", "cloth")

# RGB colours per style, as such masks are commonly sold.
_COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "surgical": (
        (122, 178, 215),  # light blue
        (118, 190, 168),  # sea green
        (232, 236, 238),  # white
        (232, 172, 192),  # pink
        (38, 38, 44),  # black
        (176, 168, 220),  # lavender
    ),
    "kn95": ((236, 236, 232), (32, 32, 36), (168, 170, 175), (228, 190, 200)),
    "n95": ((234, 232, 224), (222, 212, 192), (178, 182, 188), (96, 132, 190)),
    "cloth": (
        (30, 30, 33),  # black
        (36, 46, 86),  # navy
        (122, 122, 128),  # grey
        (202, 182, 150),  # beige
        (160, 36, 46),  # red
        (72, 98, 142),  # denim
        (100, 106, 66),  # olive
        (226, 226, 220),  # white
    ),
}
_TEXTURES: dict[str, tuple[str, ...]] = {
    "surgical": ("nonwoven",),
    "kn95": ("nonwoven",),
    "n95": ("nonwoven",),
    "cloth": ("weave", "heather", "twill", "stripes"),
}
_TEXTURE_SIZE = 160
_SHIFT = 4  # cv2 fixed-point bits: outlines are placed to 1/16 px
_ONE = 1 << _SHIFT
# The raster on which shading is drawn once per style, in mask coordinates (u, v).
_U_RANGE = (-1.75, 1.75)
_V_RANGE = (-0.3, 1.3)
_CELL = np.array([0.02, 0.01])
_TIE_SHADE = 0.9
_MAX_STRETCH = 1.25


@dataclass(frozen=True)
class MaskedFace:
    """A masked copy of a crop and the pixels the mask hides (loops and straps included)."""

    image: np.ndarray  # HxWx3 uint8
    coverage: np.ndarray  # HxW bool
    style: str


def apply_mask(
    crop: np.ndarray,
    *,
    rng: np.random.Generator | int,
    style: str | None = None,
    landmarks: np.ndarray | None = None,
) -> MaskedFace:
    """Draw a mask on an aligned RGB crop; `crop` is never modified.

    `landmarks` (5x2: eyes, nose, mouth corners, in crop pixels) default to the 112x112
    template, where alignment put them. `style` None picks one of `STYLES` at random. The same
    seed (or the same Generator state) gives the same mask.
    """
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB crop, got {crop.dtype} {crop.shape}")
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown mask style {style!r}; choose one of {', '.join(STYLES)}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    # Every random choice from one draw: style, frame jitter (3), colour (4), shading variant,
    # texture (3). A fixed layout keeps a seed's mask the same whichever style is forced.
    draw = gen.random(12)
    style = style or STYLES[int(draw[0] * len(STYLES))]
    frame = _frame(_landmark_transform(landmarks), draw[1:4])
    alpha = _coverage_alpha(crop.shape[:2], frame, style)
    image = _composite(crop, alpha, frame, style, draw[4:])
    return MaskedFace(image=image, coverage=alpha >= 128, style=style)


def _landmark_transform(landmarks: np.ndarray | None) -> np.ndarray:
    """3x3 map from the template to `landmarks` (identity when None): the least-squares
    affine fit, its stretch limited to `_MAX_STRETCH`.

    Affine rather than similarity: a face tilted up or down has its nose nearer to or further
    from the eyes, and the mask's top edge must follow the eyes. The limit keeps a face whose
    landmarks are degenerate (a profile) from getting a sliver of a mask.
    """
    if landmarks is None:
        return np.eye(3)
    dst = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    src = np.hstack([REFERENCE_112.astype(np.float64), np.ones((5, 1))])
    fit = np.linalg.lstsq(src, dst, rcond=None)[0].T
    rotate, stretch, turn = np.linalg.svd(fit[:, :2])
    stretch = np.maximum(stretch, stretch[0] / _MAX_STRETCH)
    transform = np.eye(3)
    transform[:2, :2] = rotate @ np.diag(stretch) @ turn
    transform[:2, 2] = dst.mean(0) - transform[:2, :2] @ src[:, :2].mean(0)
    return transform


def _frame(landmarks_tf: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """2x3 affine map from mask coordinates (u, v) to crop pixels, with a little jitter."""
    eye_l, eye_r, nose, mouth_l, mouth_r = REFERENCE_112.astype(np.float64)
    eye_y, mouth_y = (eye_l[1] + eye_r[1]) / 2, (mouth_l[1] + mouth_r[1]) / 2
    half_width = 1.1 * (eye_r[0] - eye_l[0]) * (0.96 + 0.08 * draw[0])
    top = eye_y + (0.28 + 0.06 * draw[1]) * (nose[1] - eye_y)
    chin = mouth_y + (0.98 + 0.06 * draw[2]) * (mouth_y - nose[1])
    centre_x = (nose[0] + (eye_l[0] + eye_r[0]) / 2) / 2
    local = np.array([[half_width, 0.0, centre_x], [0.0, chin - top, top], [0.0, 0.0, 1.0]])
    return (landmarks_tf @ local)[:2]


def _coverage_alpha(shape: tuple[int, int], frame: np.ndarray, style: str) -> np.ndarray:
    """uint8 coverage with anti-aliased edges: the mask body plus its loops or straps."""
    alpha = np.zeros(shape, np.uint8)
    body, ties, width = _OUTLINES[style]()
    cv2.fillPoly(alpha, [_to_pixels(body, frame)], 255, cv2.LINE_AA, _SHIFT)
    cv2.polylines(
        alpha, [_to_pixels(t, frame) for t in ties], False, 255, width, cv2.LINE_AA, _SHIFT
    )
    return alpha


def _to_pixels(points_uv: np.ndarray, frame: np.ndarray) -> np.ndarray:
    xy = points_uv @ frame[:, :2].T + frame[:, 2]
    return np.round(xy * _ONE).astype(np.int32)


def _mirror(side: list[np.ndarray]) -> list[np.ndarray]:
    return side + [t * np.array([-1.0, 1.0]) for t in side]


@functools.cache
def _surgical() -> tuple[np.ndarray, list[np.ndarray], int]:
    """A pleated rectangle pulled over the nose: straight-ish sides, jaw-hugging bottom."""
    u = np.linspace(-1, 1, 41)
    top = np.stack([u, 0.12 * np.abs(u) ** 1.5], 1)
    ub = np.linspace(0.84, -0.84, 33)
    bottom = np.stack([ub, 1.0 - 0.2 * (ub / 0.84) ** 2], 1)
    loops = [
        np.array([[-1.0, 0.12], [-1.18, 0.07], [-1.32, 0.06]]),
        np.array([[-0.84, 0.8], [-1.02, 0.55], [-1.22, 0.32], [-1.32, 0.24]]),
    ]
    return np.concatenate([top, bottom]), _mirror(loops), 1


@functools.cache
def _kn95() -> tuple[np.ndarray, list[np.ndarray], int]:
    """Two folded panels: a pointed nose bridge, a vertical seam, a pointed chin."""
    right = np.array([[0.0, -0.03], [0.45, 0.05], [0.95, 0.2], [0.98, 0.55], [0.7, 0.86]])
    body = np.concatenate([right, [[0.0, 1.03]], right[:0:-1] * [-1.0, 1.0]])
    loops = [
        np.array([[-0.95, 0.2], [-1.15, 0.14], [-1.32, 0.12]]),
        np.array([[-0.72, 0.84], [-1.0, 0.56], [-1.32, 0.3]]),
    ]
    return body, _mirror(loops), 1


@functools.cache
def _n95() -> tuple[np.ndarray, list[np.ndarray], int]:
    """A moulded oval cup under the nose and around the chin, held by head straps."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    body = np.stack([0.97 * np.sin(t), 0.56 - 0.56 * np.cos(t)], 1)
    straps = [
        np.array([[-0.9, 0.3], [-1.2, 0.2], [-1.6, 0.14]]),
        np.array([[-0.86, 0.85], [-1.2, 0.72], [-1.6, 0.62]]),
    ]
    return body, _mirror(straps), 2


@functools.cache
def _cloth() -> tuple[np.ndarray, list[np.ndarray], int]:
    """A rounded fabric mask: a curved top over the nose and a round, full chin."""
    u = np.linspace(-1, 1, 33)
    top = np.stack([u, 0.13 * u**2], 1)
    ub = np.linspace(1, -1, 41)
    bottom = np.stack([ub, 0.13 + 0.9 * (1 - np.abs(ub) ** 2.5) ** 0.4], 1)
    loops = [
        np.array([[-1.0, 0.13], [-1.15, 0.1], [-1.32, 0.1]]),
        np.array([[-0.9, 0.72], [-1.1, 0.5], [-1.32, 0.3]]),
    ]
    return np.concatenate([top, bottom]), _mirror(loops), 2


_OUTLINES: dict[str, Callable[[], tuple[np.ndarray, list[np.ndarray], int]]] = {
    "surgical": _surgical,
    "kn95": _kn95,
    "n95": _n95,
    "cloth": _cloth,
}


def _composite(
    crop: np.ndarray, alpha: np.ndarray, frame: np.ndarray, style: str, draw: np.ndarray
) -> np.ndarray:
    """Blend the shaded mask over the crop, on the rows it touches only."""
    out = crop.copy()
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return out
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    width = crop.shape[1]
    a = alpha[y0:y1].astype(np.float32) * np.float32(1 / 255)
    shade = _warped_shading(style, draw[4], frame, y0, y1, width)
    shade *= _texture(style, draw[5:8], a.shape)
    # Contact shadow: the mask's rim darkens the skin just outside it.
    keep = (1 - a) * (1 - 0.3 * np.clip(cv2.GaussianBlur(a, (7, 7), 1.5) - a, 0, 1))
    covered = np.clip(shade, 0.35, 1.25) * a
    mask_rgb = cv2.merge([covered * c for c in _colour(style, draw[:4], crop)])
    face = crop[y0:y1].astype(np.float32) * cv2.merge([keep] * 3)
    out[y0:y1] = cv2.convertScaleAbs(face + mask_rgb)
    return out


def _warped_shading(
    style: str, draw: float, frame: np.ndarray, y0: int, y1: int, width: int
) -> np.ndarray:
    """The style's shading, drawn once in mask coordinates, warped onto rows y0:y1."""
    variants = _SHADERS[style][1]
    shading = _shading_map(style, int(draw * variants))
    cells = np.array([[_CELL[0], 0.0, _U_RANGE[0]], [0.0, _CELL[1], _V_RANGE[0]], [0, 0, 1]])
    warp = (frame @ cells) - np.array([[0.0, 0.0, 0.0], [0.0, 0.0, y0]])
    return cv2.warpAffine(
        shading, warp, (width, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


@functools.cache
def _shading_map(style: str, variant: int) -> np.ndarray:
    """Shading over the mask-coordinate raster: the style's shader inside the body, darkened
    towards its rim where the fabric turns away; loops and straps outside it."""
    v, u = np.mgrid[
        _V_RANGE[0] : _V_RANGE[1] : _CELL[1], _U_RANGE[0] : _U_RANGE[1] : _CELL[0]
    ].astype(np.float32)
    body = np.zeros(u.shape, np.float32)
    outline = (_OUTLINES[style]()[0] - [_U_RANGE[0], _V_RANGE[0]]) / _CELL
    cv2.fillPoly(body, [np.round(outline * _ONE).astype(np.int32)], 1.0, cv2.LINE_AA, _SHIFT)
    # About 1.5 px in a 112x112 crop, where a u unit is ~39 px and a v unit ~55 px.
    inner = cv2.GaussianBlur(body, (0, 0), sigmaX=2.0, sigmaY=2.7)
    shade = _SHADERS[style][0](u, v, variant) * (0.7 + 0.3 * inner)
    shading = np.where(body > 0, shade, _TIE_SHADE).astype(np.float32)
    shading.flags.writeable = False  # cached and shared by every call
    return shading


def _colour(style: str, draw: np.ndarray, crop: np.ndarray) -> list[np.float32]:
    """A catalogue colour, jittered, then lit and tinted like the face it sits on."""
    palette = _COLOURS[style]
    base = palette[int(draw[0] * len(palette))]
    h, w = crop.shape[:2]
    face = cv2.mean(crop[h // 6 : h - h // 8, w // 4 : w - w // 4])[:3]
    grey = max(sum(face) / 3, 1.0)
    light = min(max(0.7 + 0.3 * grey / 128, 0.65), 1.1)
    return [
        np.float32(b * (0.96 + 0.08 * j) * light * (0.75 + 0.25 * f / grey))
        for b, j, f in zip(base, draw[1:4], face, strict=True)
    ]


def _shade_surgical(u: np.ndarray, v: np.ndarray, variant: int) -> np.ndarray:
    """Three pleats, fanning in towards the ear loops, between a nose-wire hem and the chin."""
    fanned = 0.45 + (v - 0.45) / (1 - 0.35 * np.minimum(u**2, 1))
    pleat = np.clip((fanned - 0.24) / 0.52, 0, 1) * 3
    within = pleat - np.floor(pleat)
    shade = 1.0 - 0.16 * u**2 - 0.1 * np.clip(v - 0.6, 0, 1)
    shade *= np.where((pleat > 0) & (pleat < 3), 0.92 + 0.14 * within, 1.0)
    folds = np.minimum(within, 1 - within) * (0.52 / 3)
    shade *= 1 - 0.2 * np.exp(-((folds / 0.012) ** 2)) * ((pleat > 0) & (pleat <= 3))
    return shade * (1 - 0.2 * np.exp(-(((v - 0.09) / 0.012) ** 2)))


def _shade_kn95(u: np.ndarray, v: np.ndarray, variant: int) -> np.ndarray:
    """Two flat panels catching the light differently, a welded centre seam."""
    side = 1.0 if variant == 0 else -1.0
    shade = 1.0 - 0.12 * u**2 + 0.08 * side * np.tanh(6 * u)
    shade *= 1 - 0.3 * np.exp(-((u / 0.025) ** 2))
    return shade * (1 - 0.08 * np.clip(v - 0.55, 0, 1))


def _shade_n95(u: np.ndarray, v: np.ndarray, variant: int) -> np.ndarray:
    """A dome: bright in the middle, falling off to the rim; a nose clip under the top edge."""
    shade = 1.1 - 0.3 * (u**2 + ((v - 0.56) / 0.56) ** 2)
    nose_clip = (np.abs(u) < 0.3) & (v > 0.03) & (v < 0.09)
    return shade * np.where(nose_clip, 1.08, 1.0)


def _shade_cloth(u: np.ndarray, v: np.ndarray, variant: int) -> np.ndarray:
    """Soft fabric over the nose and cheeks; variant 1 has a sewn centre seam."""
    shade = 1.02 - 0.2 * u**2 - 0.12 * np.clip(v - 0.55, 0, 1)
    if variant == 1:
        shade *= 1 - 0.22 * np.exp(-((u / 0.03) ** 2))
    return shade


# Shader and number of variants per style.
_SHADERS: dict[str, tuple[Callable[[np.ndarray, np.ndarray, int], np.ndarray], int]] = {
    "surgical": (_shade_surgical, 1),
    "kn95": (_shade_kn95, 2),
    "n95": (_shade_n95, 1),
    "cloth": (_shade_cloth, 2),
}


def _texture(style: str, draw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A window at a random offset into one of the style's precomputed fabric textures."""
    names = _TEXTURES[style]
    texture = _fabrics()[names[int(draw[0] * len(names))]]
    h, w = shape
    y = int(draw[1] * (_TEXTURE_SIZE - h)) if h < _TEXTURE_SIZE else 0
    x = int(draw[2] * (_TEXTURE_SIZE - w)) if w < _TEXTURE_SIZE else 0
    window = texture[y : y + h, x : x + w]
    if window.shape != shape:  # crops larger than the texture: tile it
        reps = (-(-h // _TEXTURE_SIZE) + 1, -(-w // _TEXTURE_SIZE) + 1)
        window = np.tile(texture, reps)[y : y + h, x : x + w]
    return window


@functools.cache
def _fabrics() -> dict[str, np.ndarray]:
    """Multiplicative fabric textures around 1.0, made once from a fixed seed."""
    gen = np.random.default_rng(20220222)
    n = _TEXTURE_SIZE
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)

    def noise(std: float, sigma: float) -> np.ndarray:
        field = gen.normal(0, 1, (n, n)).astype(np.float32)
        if sigma > 0:
            field = cv2.GaussianBlur(field, (0, 0), sigma)
            field /= field.std()
        return std * field

    return {
        "nonwoven": 1 + noise(0.025, 0) + noise(0.02, 2.5),
        "weave": 1 + 0.045 * np.cos(np.pi * x) * np.cos(np.pi * y) + noise(0.03, 0.7),
        "heather": 1 + noise(0.06, 1.2) + noise(0.03, 0),
        "twill": 1 + 0.05 * np.sin(2 * np.pi * (x + y) / 3) + noise(0.03, 0.8),
        "stripes": 1 + 0.12 * np.tanh(3 * np.sin(2 * np.pi * (x + 0.3 * y) / 9)) + noise(0.03, 0),
    }
