"""SCRFD-500MF (insightface's `scrfd_500m_bnkps`): a one-pass detector that finds masked faces.

MTCNN's cascade was trained on bare faces and misses many masked ones; SCRFD, trained on WIDER
FACE, finds them (issue #32). The ONNX graph ends at raw per-anchor outputs; this module turns
them into faces: anchor centres, box and keypoint distances, score threshold, NMS. Its 5 points
are the ones `embedder.align` maps onto insightface's template, so alignment is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from embedder.mtcnn import Detection, nms

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
_MEAN, _SCALE = 127.5, 1 / 128


class DetectorModelMissing(FileNotFoundError, LookupError):
    """The detector's model file is not there: a setting to fix (the CLI's one-line usage
    error, as a LookupError), and a missing file (an OSError) to the code that opens it."""


class SCRFD:
    """The detector on ONNX Runtime; load once per process.

    A photo is scaled down to fit ``input_size``. A smaller one is searched twice, as it is and
    scaled up to fill the input, and the two merged: the anchors of stride 32 cover faces of
    about 256-512 px, so a tight crop blown up would be missed, while the faces of a small web
    photo are often too small to find unless blown up (rwmfd: 87.6% of photos with a face in
    one pass, 93.3% in two). A border of ``margin`` (a fraction of the longer side) is added
    around the photo, so that a face filling the photo (an ID-style crop) still has a
    background."""

    name = "scrfd"  # what a gallery records as the detector of its faces

    def __init__(
        self,
        path: Path,
        *,
        input_size: int = 640,
        threshold: float = 0.5,
        nms_threshold: float = 0.4,
        margin: float = 0.25,
        min_face_size: float = 10,
        threads: int | None = None,
    ) -> None:
        if not Path(path).is_file():
            raise DetectorModelMissing(
                f"SCRFD model {path} not found: set CQAFACE_SCRFD_MODEL or CQAFACE_SHARED_MODELS"
                " to where scrfd_500m_bnkps.onnx is, or CQAFACE_DETECTOR=mtcnn"
            )
        from embedder.onnx_export import session

        self.session = session(path, threads)
        self.input_size = input_size
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.margin = margin
        self.min_face_size = min_face_size

    def detect(self, image: np.ndarray, *, min_face_size: float | None = None) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB photo, most confident first. ``min_face_size`` drops
        smaller faces (the shorter side of the box, in photo pixels)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
        fill = self.input_size / ((1 + 2 * self.margin) * max(image.shape[:2]))
        passes = [self._pass(image, min(1.0, fill))]
        if fill > 1:
            passes.append(self._pass(image, fill))
        boxes, scores, points = (np.concatenate(part) for part in zip(*passes, strict=True))
        keep = nms(boxes, scores, self.nms_threshold, offset=1.0)
        minimum = max(self.min_face_size, min_face_size or 0)
        faces = [
            Detection(tuple(float(v) for v in box), float(score), mark.astype(np.float32))
            for box, score, mark in zip(boxes[keep], scores[keep], points[keep], strict=True)
        ]
        return [face for face in faces if face.size >= minimum]

    def _pass(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores and points in photo pixels from one run on the photo at ``scale``."""
        pixels, scale, border = self._input(image, scale)
        outputs = dict(zip(self._names(), self.session.run(None, {"input.1": pixels}), strict=True))
        boxes, scores, points = _decode(outputs, pixels.shape[2], pixels.shape[3], self.threshold)
        return (boxes - border) / scale, scores, (points - border) / scale

    def _names(self) -> list[str]:
        return [output.name for output in self.session.get_outputs()]

    def _input(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
        """The NCHW network input, the scale applied and the border added (input pixels)."""
        height, width = image.shape[:2]
        border_px = round(self.margin * max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = image if scale == 1 else cv2.resize(image, size, interpolation=interpolation)
        border = round(border_px * scale)
        side_h = -(-(size[1] + 2 * border) // 32) * 32  # the graph needs multiples of 32
        side_w = -(-(size[0] + 2 * border) // 32) * 32
        canvas = np.zeros((side_h, side_w, 3), np.float32)
        canvas[border : border + size[1], border : border + size[0]] = (small - _MEAN) * _SCALE
        return canvas.transpose(2, 0, 1)[None].copy(), scale, border


def _decode(
    outputs: dict[str, np.ndarray], height: int, width: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4), scores (N,) and 5 points (N, 5, 2) of the anchors over ``threshold``,
    in input pixels: distances from each anchor centre, in units of its stride."""
    boxes, scores, points = [], [], []
    for stride in STRIDES:
        score = outputs[f"score_{stride}"][0, :, 0]
        hit = np.flatnonzero(score >= threshold)
        centres = _centres(height // stride, width // stride, stride)[hit]
        distance = outputs[f"bbox_{stride}"][0, hit] * stride
        offsets = outputs[f"kps_{stride}"][0, hit].reshape(-1, 5, 2) * stride
        boxes.append(np.concatenate([centres - distance[:, :2], centres + distance[:, 2:]], 1))
        scores.append(score[hit])
        points.append(centres[:, None, :] + offsets)
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)


def _centres(rows: int, columns: int, stride: int) -> np.ndarray:
    """Anchor centres (x, y): each cell's top-left corner, once per anchor of the cell."""
    ys, xs = np.mgrid[:rows, :columns]
    corners = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(corners, ANCHORS_PER_CELL, axis=0)
