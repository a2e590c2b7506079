"""MTCNN face detector (Zhang et al. 2016), reimplemented to agree with facenet-pytorch 2.6.0.

The training crops in ``celeba-112`` were aligned from facenet-pytorch's MTCNN, so this
cascade reproduces its arithmetic where it moves boxes or landmarks: area (box-average)
resampling, the (x - 127.5) / 128 normalisation, crops of the in-image part of each box
stretched to the net's input, the same NMS conventions per stage. Only the mechanics differ:
candidates are resampled from a summed-area table in one vectorised gather instead of a Python
loop, and the R-Net and O-Net stages run once over the candidates of a whole batch of photos.

The weights are the original ones shipped in the facenet-pytorch wheel; we read its data files
without importing the package (which pulls in torchvision).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_ENV = "CQAFACE_MTCNN_WEIGHTS"
_INSTALL_HINT = (
    "install the original MTCNN weights with `pip install --no-deps facenet-pytorch==2.6.0`, "
    f"or point {WEIGHTS_ENV} at a folder holding pnet.pt, rnet.pt and onet.pt"
)
_MEAN, _SCALE = 127.5, 0.0078125  # MTCNN input normalisation: (x - 127.5) / 128
_CHUNK = 256  # candidates per R-Net/O-Net call: bounds memory on photos with many candidates
_PAIR_BLOCK = 1 << 22  # overlap-matrix entries computed at once by NMS


@dataclass(frozen=True, eq=False)
class Detection:
    """One face: box (x1, y1, x2, y2) and 5 landmarks (left eye, right eye, nose, mouth left,
    mouth right; "left" as seen in the photo) in photo pixels."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # 5x2 float32 (x, y)

    @property
    def size(self) -> float:
        """The shorter side of the box, the size that minimum-face rules compare against."""
        x1, y1, x2, y2 = self.box
        return min(x2 - x1, y2 - y1)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1)

    def scaled(self, sx: float, sy: float) -> Detection:
        """The same face in a copy of the photo scaled by ``sx`` and ``sy``."""
        x1, y1, x2, y2 = self.box
        factor = np.array([sx, sy], np.float32)
        return Detection((x1 * sx, y1 * sy, x2 * sx, y2 * sy), self.score, self.landmarks * factor)


class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12x12 window every 2 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face probability (N, H', W') and box regression (N, 4, H', W')."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24x24 candidates."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face probability (N,) and box regression (N, 4)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return F.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 candidates: final score, box and landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Face probability (N,), box regression (N, 4), landmarks (N, 10: 5 x then 5 y)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return F.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """Flatten in (W, H, C) order, the layout the original Caffe dense weights expect."""
    return x.permute(0, 3, 2, 1).flatten(1)


def weights_dir() -> Path:
    """The folder with pnet.pt, rnet.pt, onet.pt: $CQAFACE_MTCNN_WEIGHTS, else the wheel's."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"MTCNN weights not found: {_INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0]) / "data"


def _load(net: nn.Module, folder: Path, name: str) -> nn.Module:
    path = folder / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"MTCNN weights file {path} is missing: {_INSTALL_HINT}")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


@dataclass(frozen=True)
class _Candidates:
    """Boxes still in the running, for all photos of a batch, grouped by photo."""

    photo: np.ndarray  # (N,) int: index of the photo in the batch
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32

    def take(self, index: np.ndarray) -> _Candidates:
        return _Candidates(self.photo[index], self.boxes[index], self.scores[index])


class Networks(NamedTuple):
    """The cascade's three nets as functions of an NHWC float32 batch (already normalised)
    returning numpy arrays: P-Net (prob, reg), R-Net (prob, reg), O-Net (prob, reg, marks).
    PyTorch runs them here; `embedder.mtcnn_onnx` runs the same weights under ONNX Runtime."""

    pnet: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    rnet: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    onet: Callable[[np.ndarray], tuple[np.ndarray, ...]]


class TorchNet:
    """One net run by PyTorch eager: NHWC numpy in, numpy out."""

    def __init__(self, net: nn.Module, device: torch.device) -> None:
        # Channels-last runs the small convolutions and 3x3 poolings several times faster on CPU.
        self.net = net.to(device=device, memory_format=torch.channels_last)
        self.device = device

    @torch.inference_mode()
    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        # NHWC -> NCHW view in channels-last layout: no copy on CPU.
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
        return tuple(part.cpu().numpy() for part in self.net(batch))


def load_nets(folder: Path | None = None) -> tuple[PNet, RNet, ONet]:
    """The three nets with the original weights, in eval mode on CPU."""
    folder = folder or weights_dir()
    return (
        _load(PNet(), folder, "pnet"),
        _load(RNet(), folder, "rnet"),
        _load(ONet(), folder, "onet"),
    )


def torch_networks(device: str | torch.device | None = None) -> Networks:
    device = torch.device(device or "cpu")
    return Networks(*(TorchNet(net, device) for net in load_nets()))


class MTCNN:
    """The three-stage cascade; weights load once, so keep one instance per process."""

    name = "mtcnn"  # what a gallery records as the detector of its faces

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        device: str | torch.device | None = None,
        networks: Networks | None = None,
    ) -> None:
        """``networks`` (default: PyTorch on ``device``) run the nets; the cascade around
        them, and so its arithmetic, is the same whatever runs them."""
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.factor = factor
        self.networks = networks or torch_networks(device)

    def detect(self, image: np.ndarray, *, min_face_size: float | None = None) -> list[Detection]:
        """Faces in one HxWx3 uint8 RGB photo, most confident first."""
        return self.detect_batch([image], min_face_size=min_face_size)[0]

    def detect_batch(
        self, images: Sequence[np.ndarray], *, min_face_size: float | None = None
    ) -> list[list[Detection]]:
        """Faces in each photo; photos may differ in size. The R-Net and O-Net stages run once
        over the candidates of all photos, which is where batching pays.

        ``min_face_size`` above the detector's own skips the pyramid's finer levels: the
        pyramid starts at its coarsest level that still sees a face of that size, so P-Net
        runs on fewer pixels and R-Net on fewer candidates. The levels kept are the detector's
        own (not a pyramid anchored anew), so a face both find comes out the same."""
        for image in images:
            _check_image(image)
        if not images:
            return []
        tables = [_Integral.of(image) for image in images]
        candidates = self._propose(tables, min_face_size or self.min_face_size)
        candidates = self._refine(tables, candidates)
        candidates, landmarks = self._output(tables, candidates)
        return _detections(len(images), candidates, landmarks)

    def _propose(self, tables: list[_Integral], min_face_size: float) -> _Candidates:
        """Stage 1: P-Net over an image pyramid, then squared, regressed boxes."""
        parts = []
        for index, table in enumerate(tables):
            boxes, scores = self._propose_one(table, min_face_size)
            parts.append(_Candidates(np.full(len(boxes), index), boxes, scores))
        return _concat(parts)

    def _propose_one(self, table: _Integral, min_face_size: float) -> tuple[np.ndarray, np.ndarray]:
        height, width = table.height, table.width
        whole = np.array([[0, 0, width, height]])
        levels = []
        scales = _pyramid(height, width, self.min_face_size, self.factor)
        for scale in _from_level_for(scales, min_face_size):
            level = table.resample(whole, int(height * scale + 1), int(width * scale + 1))
            prob, reg = (part[0] for part in self.networks.pnet(level))
            box, score, offset = _windows(prob, reg, scale, self.thresholds[0])
            keep = nms(box, score, 0.5)
            levels.append((box[keep], score[keep], offset[keep]))
        if not levels:  # photo smaller than the minimum face
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        box, score, offset = (np.concatenate(column) for column in zip(*levels, strict=True))
        keep = nms(box, score, 0.7)
        box, score, offset = box[keep], score[keep], offset[keep]
        size = box[:, 2:] - box[:, :2]  # stage 1 regresses without the +1 of later stages
        return _square(box + offset * np.tile(size, 2)), score

    def _refine(self, tables: list[_Integral], found: _Candidates) -> _Candidates:
        """Stage 2: R-Net rescoring, per-photo NMS, box regression, squaring."""
        found, crops = _crops(tables, found, 24)
        prob, reg = _chunked(self.networks.rnet, crops)
        passed = prob > self.thresholds[1]
        found = _Candidates(found.photo[passed], found.boxes[passed], prob[passed])
        keep = _nms_per_photo(found, 0.7)
        found, reg = found.take(keep), reg[passed][keep]
        return replace(found, boxes=_square(_regress(found.boxes, reg)))

    def _output(
        self, tables: list[_Integral], found: _Candidates
    ) -> tuple[_Candidates, np.ndarray]:
        """Stage 3: O-Net score, landmarks and final box, then NMS by overlap of the smaller."""
        found, crops = _crops(tables, found, 48)
        prob, reg, marks = _chunked(self.networks.onet, crops)
        passed = prob > self.thresholds[2]
        found = _Candidates(found.photo[passed], found.boxes[passed], prob[passed])
        reg, marks = reg[passed], marks[passed]
        landmarks = onet_points(found.boxes, marks)
        found = replace(found, boxes=_regress(found.boxes, reg))
        keep = _nms_per_photo(found, 0.7, mode="min", offset=1.0)
        return found.take(keep), landmarks[keep]


def onet_points(boxes: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """O-Net's 10 outputs per box (x1..x5, y1..y5 as shares of the box) as (N, 5, 2) points in
    the photo's pixels."""
    origin = boxes[:, None, :2] - 1
    extent = boxes[:, None, 2:] - origin
    return marks.reshape(-1, 2, 5).transpose(0, 2, 1) * extent + origin


@functools.cache
def default_detector() -> MTCNN:
    """The process-wide detector with the reference settings, created on first use."""
    return MTCNN()


def _chunked(
    net: Callable[[np.ndarray], tuple[np.ndarray, ...]], crops: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Run a net over candidates in chunks (at least one, so that none gives empty outputs)."""
    outputs = [net(crops[start : start + _CHUNK]) for start in range(0, max(len(crops), 1), _CHUNK)]
    return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")


def _pyramid(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales mapping faces from ``min_face`` px up to the whole photo onto P-Net's 12 px.

    Accumulated by repeated multiplication, as the reference does, so that the rounded sizes
    of each level match it exactly."""
    scale = 12.0 / min_face
    side = min(height, width) * scale
    scales = []
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _from_level_for(scales: list[float], min_face_size: float) -> list[float]:
    """The pyramid from its coarsest level whose smallest face (12 px / scale) is at most
    ``min_face_size``: every face of that size or larger is still seen at some level."""
    sees = [i for i, scale in enumerate(scales) if 12.0 / scale <= min_face_size * (1 + 1e-9)]
    return scales[max(sees, default=0) :]


def _windows(
    prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P-Net cells over the threshold as photo-pixel boxes, with scores and regressions."""
    ys, xs = np.nonzero(prob >= threshold)
    cell = np.stack([xs, ys], axis=1).astype(np.float32)
    corners = np.concatenate(
        [np.floor((2 * cell + 1) / scale), np.floor((2 * cell + 12) / scale)], axis=1
    )
    return corners, prob[ys, xs], reg[:, ys, xs].T


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around the same centre."""
    size = boxes[:, 2:] - boxes[:, :2]
    side = size.max(axis=1, keepdims=True)
    corner = boxes[:, :2] + size * 0.5 - side * 0.5
    return np.concatenate([corner, corner + side], axis=1)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply R-Net/O-Net box regression, relative to the inclusive box size."""
    size = boxes[:, 2:] - boxes[:, :2] + 1
    return boxes + reg * np.tile(size, 2)


@dataclass(frozen=True)
class _Integral:
    """A photo's summed-area table: the mean of any rectangle in four lookups, exactly.

    Sums are kept modulo 2**32 (OpenCV's int32 sums wrap past ~8 Mpx; read as uint32 they
    wrap predictably), which costs 12 bytes per pixel instead of 24 and stays exact: every
    rectangle we sum is a pooling bin, of at most 1/144 of the photo (P-Net levels are at
    least 12 px), so at the 40 Mpx load limit its true sum is far below 2**32."""

    flat: np.ndarray  # ((H+1)*(W+1), 3) uint32
    height: int
    width: int

    @classmethod
    def of(cls, image: np.ndarray) -> _Integral:
        table = cv2.integral(np.ascontiguousarray(image), sdepth=cv2.CV_32S).view(np.uint32)
        return cls(table.reshape(-1, 3), image.shape[0], image.shape[1])

    def resample(self, rect: np.ndarray, height: int, width: int) -> np.ndarray:
        """Average rectangles [x0, x1) x [y0, y1) into height x width bins the way torch's
        ``interpolate(mode="area")`` (adaptive average pooling) does, normalised for MTCNN:
        (N, height, width, 3) float32."""
        y0, y1 = _bins(rect[:, 1], rect[:, 3], height)
        x0, x1 = _bins(rect[:, 0], rect[:, 2], width)
        stride = self.width + 1
        top, bottom = (y0 * stride)[:, :, None], (y1 * stride)[:, :, None]
        left, right = x0[:, None, :], x1[:, None, :]
        total = np.take(self.flat, bottom + right, axis=0)  # modular: order does not matter
        total -= np.take(self.flat, top + right, axis=0)
        total -= np.take(self.flat, bottom + left, axis=0)
        total += np.take(self.flat, top + left, axis=0)
        area = (y1 - y0)[:, :, None] * (x1 - x0)[:, None, :]
        mean = total.astype(np.float32) / area[..., None].astype(np.float32)
        return (mean - _MEAN) * _SCALE


def _crops(
    tables: list[_Integral], found: _Candidates, size: int
) -> tuple[_Candidates, np.ndarray]:
    """Normalised size x size crops of each candidate, dropping boxes wholly off the photo.

    As in the reference, a box is truncated to integers and clipped to the photo, and the part
    inside is stretched to the net's input (no zero padding)."""
    parts, crops = [], []
    for index, table in enumerate(tables):
        mine = np.flatnonzero(found.photo == index)
        rect = _clip(found.boxes[mine], table.width, table.height)
        inside = (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
        parts.append(found.take(mine[inside]))
        crops.append(table.resample(rect[inside], size, size))
    return _concat(parts), np.concatenate(crops)


def _clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Half-open integer pixel rectangles [x0, x1) x [y0, y1) of the boxes inside the photo."""
    rect = np.trunc(boxes).astype(np.int64)
    rect[:, :2] = np.maximum(rect[:, :2], 1) - 1
    rect[:, 2] = np.minimum(rect[:, 2], width)
    rect[:, 3] = np.minimum(rect[:, 3], height)
    return rect


def _bins(start: np.ndarray, stop: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling bin edges: [floor(i*n/size), ceil((i+1)*n/size)) for each span."""
    length = (stop - start)[:, None]
    i = np.arange(size)
    return start[:, None] + i * length // size, start[:, None] - (-(i + 1) * length // size)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    mode: Literal["union", "min"] = "union",
    offset: float = 0.0,
) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, highest score first.

    ``mode`` divides the intersection by the union ("union") or by the smaller box ("min");
    ``offset`` is 1 for the inclusive-pixel convention. Computed without a loop over boxes:
    the greedy result is the unique fixed point of "kept unless a higher-scoring kept box
    overlaps it", reached by iterating over the sparse list of overlapping pairs.
    """
    order = np.argsort(-scores, kind="stable")
    first, second = _overlapping_pairs(boxes[order], threshold, mode, offset)
    keep = np.ones(len(order), bool)
    while True:
        suppressed = np.zeros(len(order), bool)
        suppressed[second[keep[first]]] = True
        if np.array_equal(~suppressed, keep):
            return order[keep]
        keep = ~suppressed


def _overlapping_pairs(
    boxes: np.ndarray, threshold: float, mode: str, offset: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, overlapping above the threshold; in row blocks to bound memory."""
    area = np.prod(boxes[:, 2:] - boxes[:, :2] + offset, axis=1)
    rows = max(1, _PAIR_BLOCK // max(len(boxes), 1))
    pairs = [np.zeros((0, 2), np.int64)]
    for start in range(0, len(boxes), rows):
        block = slice(start, start + rows)
        low = np.maximum(boxes[block, None, :2], boxes[None, start:, :2])
        high = np.minimum(boxes[block, None, 2:], boxes[None, start:, 2:])
        inter = np.prod(np.maximum(high - low + offset, 0), axis=2)
        mine, theirs = area[block, None], area[None, start:]
        base = np.minimum(mine, theirs) if mode == "min" else mine + theirs - inter
        with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes: no overlap
            hit = np.argwhere(inter / base > threshold) + start
        pairs.append(hit[hit[:, 1] > hit[:, 0]])
    pairs = np.concatenate(pairs)
    return pairs[:, 0], pairs[:, 1]


def _nms_per_photo(
    found: _Candidates,
    threshold: float,
    mode: Literal["union", "min"] = "union",
    offset: float = 0.0,
) -> np.ndarray:
    """NMS within each photo, never across photos; indices into ``found``."""
    keep = []
    for index in np.unique(found.photo):
        mine = np.flatnonzero(found.photo == index)
        kept = nms(found.boxes[mine], found.scores[mine], threshold, mode=mode, offset=offset)
        keep.append(mine[kept])
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


def _concat(parts: list[_Candidates]) -> _Candidates:
    return _Candidates(
        np.concatenate([part.photo for part in parts]),
        np.concatenate([part.boxes for part in parts]),
        np.concatenate([part.scores for part in parts]),
    )


def _detections(count: int, found: _Candidates, landmarks: np.ndarray) -> list[list[Detection]]:
    """Split the batch's survivors back into one list per photo, most confident first."""
    result: list[list[Detection]] = [[] for _ in range(count)]
    for index in np.argsort(-found.scores, kind="stable"):
        result[found.photo[index]].append(
            Detection(
                box=tuple(float(v) for v in found.boxes[index]),
                score=float(found.scores[index]),
                landmarks=landmarks[index].astype(np.float32),
            )
        )
    return result
