"""MTCNN with two second looks (the face in context, a relaxed search where none was found)
and a masked face's points from an O-Net fine-tuned on masks.

Why MTCNN misses faces (issue #32, traced stage by stage on rwmfd photos it finds nothing in,
docs/detection.md):
- A face that fills the photo (an ID-style crop): MTCNN's box for it reaches outside the photo,
  R-Net and O-Net see only the part inside, stretched to their input, and put their points on
  part of the face. With a black border around the photo they see the whole face.
- A masked face: R-Net and O-Net score it below their thresholds (0.7), or the face is below
  the 20 px minimum of the pyramid.
- A masked face found with its eyes off: O-Net puts them up to half an eye distance off, at a
  score of 1.0, even given the box MTCNN finds on the bare photo; it never saw a mask.

So the first pass is MTCNN as it is (the same faces and points, the training crops'
alignment). Where one of its boxes reaches outside the photo, the photo is searched again with
a border, for faces of at least ``CONTEXT_FACE`` of its shorter side; a face seen there whose
points disagree with the first pass's replaces it. Where the first pass found nothing, the
bordered photo is searched again with ``RELAXED`` thresholds down to ``RELAXED_MIN_SHARE`` of
MTCNN's minimum face (12 px of its 20).
Both looks use MTCNN's own weights. Last, every face found is shown to a copy of O-Net
fine-tuned on masked faces (``MASKED_ONET``, `trainer.onet_masked`), which also says whether
the face wears a mask: where it does, that copy's points replace O-Net's. A face it sees as
bare keeps MTCNN's points, to the bit: the model was trained on crops aligned by them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from embedder.mtcnn import (
    MTCNN,
    Detection,
    Networks,
    ONet,
    TorchNet,
    _clip,
    _Integral,
    _square,
    onet_points,
)

BORDER = 0.25  # black border on each side, a fraction of the photo's longer side, at most
# its shorter side: a 20,000 x 100 banner gets 100 px, not 5,000 (a 300 MP canvas)
CONTEXT_FACE = 0.4  # the context pass looks for faces of at least this share of the short side
INSIDE = 0.9  # a box with less of its area inside the photo was cut by the photo's edge
AGREE = 0.25  # eye distances: points further apart than this are on different features
RELAXED = (0.5, 0.3, 0.3)  # P-Net, R-Net, O-Net thresholds of the look where none was found
RELAXED_MIN_SHARE = 0.6  # of MTCNN's minimum face: 12 px of 20, P-Net's window at full scale
MASKED_ONET = Path(__file__).parent / "weights" / "onet_masked.pt"  # trainer/onet_masked.py
MASKED = 0.5  # the masked-face O-Net's mask probability from which its points are taken


class RetryMTCNN:
    """MTCNN, the context and relaxed looks, the masked-face O-Net; load once per process."""

    name = "mtcnn-retry"  # what a gallery records as the detector of its faces

    def __init__(self, mtcnn: MTCNN, masked_onet: Callable | None = None) -> None:
        """``masked_onet`` (default: ``MASKED_ONET`` on PyTorch) runs the masked-face O-Net."""
        self.mtcnn = mtcnn
        self.masked_onet = masked_onet or masked_onet_net()
        self.relaxed = MTCNN(
            min_face_size=RELAXED_MIN_SHARE * mtcnn.min_face_size,
            thresholds=RELAXED,
            factor=mtcnn.factor,
            networks=mtcnn.networks,
        )

    @property
    def min_face_size(self) -> float:
        return self.mtcnn.min_face_size

    @property
    def networks(self) -> Networks:
        """The nets both looks run (MTCNN's own)."""
        return self.mtcnn.networks

    def detect(self, image: np.ndarray, *, min_face_size: float | None = None) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB photo, most confident first."""
        faces = self.looks(image, min_face_size=min_face_size)
        return _rechecked(faces, *masked_points(self.masked_onet, image, faces))

    def looks(self, image: np.ndarray, *, min_face_size: float | None = None) -> list[Detection]:
        """MTCNN's faces after the look in context and the relaxed look, before the
        masked-face O-Net's check."""
        faces = self.mtcnn.detect(image, min_face_size=min_face_size)
        height, width = image.shape[:2]
        if any(_inside(face, width, height) < INSIDE for face in faces):
            context = max(CONTEXT_FACE * min(height, width), min_face_size or 0)
            faces = _in_context(faces, _bordered(self.mtcnn, image, context))
        if not faces:
            faces = _bordered(self.relaxed, image, min_face_size)
            faces = [face for face in faces if face.size >= (min_face_size or 0)]
        return sorted(faces, key=lambda face: -face.score)


def masked_onet_net() -> TorchNet:
    """The O-Net fine-tuned on masked faces, on PyTorch (one 48x48 crop per face found)."""
    net = ONet()
    net.load_state_dict(torch.load(MASKED_ONET, map_location="cpu", weights_only=True))
    return TorchNet(net.eval().requires_grad_(False), torch.device("cpu"))


def masked_points(
    net: Callable, image: np.ndarray, faces: list[Detection]
) -> tuple[np.ndarray, np.ndarray]:
    """The masked-face O-Net on each face: its points (N, 5, 2) and the probability that the
    face wears a mask (N,), from the square around the face's box (close to the square O-Net
    was given), cropped and resampled as the cascade does."""
    if not faces:
        return np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    boxes = _square(np.array([face.box for face in faces], np.float32))
    table = _Integral.of(image)
    rect = _clip(boxes, table.width, table.height)
    inside = (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
    rect[~inside] = [0, 0, 1, 1]  # a box wholly off the photo: a dummy crop, seen as bare
    masked, _, marks = net(table.resample(rect, 48, 48))
    points = onet_points(boxes, marks)
    return points.astype(np.float32), np.where(inside, masked, 0.0)


def _rechecked(faces: list[Detection], points: np.ndarray, masked: np.ndarray) -> list[Detection]:
    """Each face, with the masked-face O-Net's points where it sees a mask."""
    return [
        replace(face, landmarks=seen) if chance >= MASKED else face
        for face, seen, chance in zip(faces, points, masked, strict=True)
    ]


def _bordered(mtcnn: MTCNN, image: np.ndarray, min_face_size: float | None) -> list[Detection]:
    """Faces found in the photo with a black border, in the photo's pixels."""
    border = round(min(BORDER * max(image.shape[:2]), min(image.shape[:2])))
    framed = cv2.copyMakeBorder(image, *[border] * 4, cv2.BORDER_CONSTANT, value=0)
    return [_moved(face, -border) for face in mtcnn.detect(framed, min_face_size=min_face_size)]


def _in_context(faces: list[Detection], seen: list[Detection]) -> list[Detection]:
    """The first pass's faces, each replaced by the bordered photo's view of the same face
    where the two put their points on different features (called where a box was cut by the
    photo's edge)."""
    result = []
    for face in faces:
        better = [other for other in seen if _same_face(face, other) and not _agree(face, other)]
        result.append(max(better, key=lambda other: other.score) if better else face)
    return result


def _inside(face: Detection, width: int, height: int) -> float:
    """The share of the face's box that lies inside the photo."""
    x1, y1, x2, y2 = face.box
    inner = max(0.0, min(x2, width) - max(x1, 0)) * max(0.0, min(y2, height) - max(y1, 0))
    return inner / face.area if face.area > 0 else 0.0


def _same_face(one: Detection, other: Detection) -> bool:
    """Boxes overlapping by more than half of the smaller one."""
    a, b = np.array(one.box), np.array(other.box)
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.maximum(high - low, 0)))
    return inter > 0.5 * min(one.area, other.area)


def _agree(one: Detection, other: Detection) -> bool:
    """Every point of ``one`` within AGREE eye distances of ``other``'s."""
    ocular = float(np.linalg.norm(other.landmarks[1] - other.landmarks[0]))
    return float(np.linalg.norm(one.landmarks - other.landmarks, axis=1).max()) < AGREE * ocular


def _moved(face: Detection, by: float) -> Detection:
    x1, y1, x2, y2 = face.box
    return Detection((x1 + by, y1 + by, x2 + by, y2 + by), face.score, face.landmarks + by)
