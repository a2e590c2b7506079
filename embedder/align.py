"""Face alignment onto the insightface 5-point template, and the way back to the photo.

The training crops (``celeba-112``) were made exactly this way: a least-squares similarity
transform (Umeyama) from the 5 MTCNN landmarks onto the template, then a bilinear
``cv2.warpAffine`` with black borders. Serving must crop the same way, or the model sees faces
unlike those it learnt from.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# insightface's 112x112 template: left eye, right eye, nose, mouth left, mouth right.
REFERENCE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned crop and the 2x3 matrix that maps photo pixels onto it."""

    crop: np.ndarray  # size x size x 3 uint8
    matrix: np.ndarray  # 2x3 float64, photo -> crop


def template(size: int = 112) -> np.ndarray:
    """The 5-point template for a size x size crop (the 112 one, scaled)."""
    return REFERENCE_112 * np.float32(size / 112)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` points
    onto ``dst`` points (Umeyama 1991), as a 2x3 float64 matrix.

    A plain SVD solution can return a reflection when the points are noisy or nearly
    collinear; flipping the sign of the last singular direction keeps it a proper rotation.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    variance = (src_centred**2).sum() / len(src)
    if variance == 0:
        raise ValueError("similarity_transform needs source points that are not all equal")
    u, singular, vt = np.linalg.svd(dst_centred.T @ src_centred / len(src))
    signs = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / variance
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> AlignedFace:
    """Warp the face with these 5 landmarks onto the template: a size x size uint8 crop."""
    matrix = similarity_transform(landmarks, template(size))
    crop = cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return AlignedFace(crop=crop, matrix=matrix)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 affine matrix undoing ``matrix`` (crop -> photo for an alignment matrix)."""
    matrix = np.asarray(matrix, np.float64)
    linear = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear, -linear @ matrix[:, 2:]])


def warp_to_photo(
    map_2d: np.ndarray,
    matrix: np.ndarray,
    photo_shape: tuple[int, ...],
    crop_size: int = 112,
) -> np.ndarray:
    """Carry a map defined over the aligned crop (an attention map, say) onto the photo's
    pixel grid, bilinearly, with zeros where the crop does not reach: HxW float32.

    ``matrix`` is the photo -> crop matrix of :func:`align`. The map may have any resolution
    (7x7 as well as 112x112): it is taken to cover the crop_size x crop_size crop, pixel
    centres aligned, the way image resizing treats them.
    """
    values = np.asarray(map_2d, np.float32)
    rows, cols = values.shape
    # photo -> crop pixel coordinates -> map pixel coordinates (centre-aligned resampling).
    to_map = np.array(
        [
            [cols / crop_size, 0, 0.5 * cols / crop_size - 0.5],
            [0, rows / crop_size, 0.5 * rows / crop_size - 0.5],
        ]
    )
    composed = to_map[:, :2] @ np.asarray(matrix, np.float64)
    composed[:, 2] += to_map[:, 2]
    height, width = photo_shape[:2]
    return cv2.warpAffine(
        values,
        composed,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
