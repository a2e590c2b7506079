"""Pictures of what the model looked at: a probe's attention maps over the photo (warped back
from the aligned crop) and each branch's map over the crop, as PNG data URIs for the UI."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
from PIL import Image as PILImage

from embedder.align import warp_to_photo
from embedder.imageio import Photo
from identify.search.encode import EncodedFace

MAX_SIDE = 720
MIN_SIDE = 320


def data_uri(rgb: np.ndarray) -> str:
    out = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _heat(rgb: np.ndarray, heat: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """``rgb`` with ``heat`` (HxW in [0, 1]) drawn over it in a jet colour map."""
    heat = np.clip(heat, 0.0, 1.0)
    colours = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = (strength * heat)[..., None]
    return (rgb * (1 - alpha) + colours * alpha).astype(np.uint8)


def _normalised(maps: np.ndarray) -> np.ndarray:
    peak = float(maps.max()) if maps.size else 0.0
    return maps / peak if peak > 0 else maps


def photo_overlay(photo: Photo, faces: list[EncodedFace]) -> str:
    """The photo with every face's attention (max over branches) and its box drawn over it,
    on its decode (which may be reduced: the faces are in the photo's own pixels)."""
    image = photo.pixels
    sx, sy = photo.scale
    heat = np.zeros(image.shape[:2], np.float32)
    for face in faces:
        if face.attention is None:
            continue
        combined = _normalised(face.attention.max(axis=0))
        matrix = face.face.matrix * np.array([1 / sx, 1 / sy, 1.0])  # decode -> crop
        heat = np.maximum(heat, warp_to_photo(combined, matrix, image.shape))
    picture = _heat(image, heat)
    for number, face in enumerate(faces, 1):
        box = np.rint(np.asarray(face.face.box) * [sx, sy, sx, sy]).astype(int)
        x1, y1, x2, y2 = (int(v) for v in box)
        colour = (255, 160, 0) if face.masked else (40, 220, 40)
        thickness = max(2, image.shape[1] // 300)
        cv2.rectangle(picture, (x1, y1), (x2, y2), colour, thickness)
        cv2.putText(
            picture,
            str(number),
            (x1 + 3, max(14, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.5, image.shape[1] / 900),
            colour,
            thickness,
        )
    scale = MAX_SIDE / max(picture.shape[:2])
    if scale < 1:
        size = (int(picture.shape[1] * scale), int(picture.shape[0] * scale))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    elif max(picture.shape[:2]) < MIN_SIDE:  # small photos (ORL's 92x112) shown larger
        scale = MIN_SIDE / max(picture.shape[:2])
        size = (int(picture.shape[1] * scale), int(picture.shape[0] * scale))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_CUBIC)
    return data_uri(picture)


def branch_overlays(face: EncodedFace) -> list[str]:
    """One picture per attention branch: its map over the aligned 112x112 crop."""
    if face.attention is None:
        return []
    crop = face.face.crop
    pictures = []
    for branch in face.attention:
        heat = cv2.resize(_normalised(branch), crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        pictures.append(data_uri(_heat(crop, heat, 0.65)))
    return pictures


def crop_uri(face: EncodedFace) -> str:
    return data_uri(face.face.crop)
